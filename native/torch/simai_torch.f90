! simai_torch: the Fortran 2008 module over libsimai_torch (simai_torch.h): the newest
! TorchScript version of a registry model, run in this process and swapped for newer versions.
!
!   use simai
!   use simai_torch
!   type(simai_store) :: store
!   type(simai_surrogate) :: model
!   real(4) :: x(n, 2), y(n, 1)                       ! a batch of n rows, as Python sees it
!   integer(8) :: version
!   call simai_open(store, stat=stat)
!   call simai_surrogate_open(model, store, 'sine', poll=1d0, trusted=.true., stat=stat)
!   call simai_surrogate_wait(model, timeout=60d0, stat=stat)
!   call simai_surrogate_run(model, x, y, version, stat)
!   call simai_surrogate_close(model)
!
! Batches are real(4) arrays of rank 2: x(n, k) is the batch of shape (n, k) the model gets in
! Python (the store's convention: the same indices, shifted by one), and y must have the
! output's shape exactly. Errors: as in the module simai (`stat`, else a message on
! error_unit); simai_torch_error_message() says what went wrong.
module simai_torch
  use, intrinsic :: iso_c_binding
  use, intrinsic :: iso_fortran_env, only: error_unit
  use simai, only: simai_store, SIMAI_OK, SIMAI_ERR_TYPE
  implicit none
  private

  public :: simai_surrogate, simai_surrogate_open, simai_surrogate_close
  public :: simai_surrogate_wait, simai_surrogate_run, simai_torch_error_message

  integer(c_int), parameter :: COLUMN_MAJOR = 1, MAX_NDIM = 32

  !> A surrogate; simai_surrogate_close lets go of it and its model.
  type :: simai_surrogate
    type(c_ptr) :: handle = c_null_ptr
  end type simai_surrogate

  !> Set by checks this module makes itself; cleared by every call (one per program: the
  !> message of a shape check is not kept per thread, unlike the C library's).
  character(len=:), allocatable :: own_message

  interface
    integer(c_int) function c_open(store, name, poll, trusted, surrogate) &
        bind(c, name='simai_surrogate_open')
      import :: c_int, c_ptr, c_char, c_double
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: name(*)
      real(c_double), value :: poll
      integer(c_int), value :: trusted
      type(c_ptr), intent(out) :: surrogate
    end function c_open
    integer(c_int) function c_close(surrogate) bind(c, name='simai_surrogate_close')
      import :: c_int, c_ptr
      type(c_ptr), value :: surrogate
    end function c_close
    integer(c_int) function c_wait(surrogate, timeout, version) &
        bind(c, name='simai_surrogate_wait')
      import :: c_int, c_ptr, c_double, c_int64_t
      type(c_ptr), value :: surrogate
      real(c_double), value :: timeout
      integer(c_int64_t), intent(out) :: version
    end function c_wait
    integer(c_int) function c_run(surrogate, ndim, shape, x, y, cap, y_ndim, y_shape, flags, &
        version) bind(c, name='simai_surrogate_run')
      import :: c_int, c_ptr, c_int64_t, c_size_t, c_float
      type(c_ptr), value :: surrogate
      integer(c_int), value :: ndim, flags
      integer(c_int64_t), intent(in) :: shape(*)
      real(c_float), intent(in) :: x(*)
      real(c_float), intent(out) :: y(*)
      integer(c_size_t), value :: cap
      integer(c_int), intent(out) :: y_ndim
      integer(c_int64_t), intent(out) :: y_shape(*)
      integer(c_int64_t), intent(out) :: version
    end function c_run
    type(c_ptr) function c_last_error() bind(c, name='simai_torch_last_error')
      import :: c_ptr
    end function c_last_error
    integer(c_size_t) function c_strlen(s) bind(c, name='strlen')
      import :: c_size_t, c_ptr
      type(c_ptr), value :: s
    end function c_strlen
  end interface

contains

  !> The message of the last call that failed in this thread.
  function simai_torch_error_message() result(message)
    character(len=:), allocatable :: message
    character(kind=c_char), pointer :: chars(:)
    type(c_ptr) :: p
    integer :: i, n
    if (allocated(own_message)) then
      message = own_message
      return
    end if
    p = c_last_error()
    n = int(c_strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate(character(len=n) :: message)
    do i = 1, n
      message(i:i) = chars(i)
    end do
  end function simai_torch_error_message

  !> Hand `rc` to the caller's stat, or report it on error_unit when there is none.
  subroutine report(rc, stat)
    integer(c_int), intent(in) :: rc
    integer, intent(out), optional :: stat
    if (present(stat)) then
      stat = int(rc)
    else if (rc /= SIMAI_OK) then
      write (error_unit, '(a)') 'simai_torch: ' // simai_torch_error_message()
    end if
  end subroutine report

  !> A surrogate for model `name` of `store`, checking for newer versions at most every `poll`
  !> seconds. Loading TorchScript runs code stored with it: `trusted` must be .true.
  subroutine simai_surrogate_open(surrogate, store, name, poll, trusted, stat)
    type(simai_surrogate), intent(out) :: surrogate
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: name
    real(8), intent(in) :: poll
    logical, intent(in) :: trusted
    integer, intent(out), optional :: stat
    integer(c_int) :: flag
    if (allocated(own_message)) deallocate(own_message)
    flag = merge(1_c_int, 0_c_int, trusted)
    call report(c_open(store%handle, trim(name) // c_null_char, real(poll, c_double), flag, &
                       surrogate%handle), stat)
  end subroutine simai_surrogate_open

  subroutine simai_surrogate_close(surrogate)
    type(simai_surrogate), intent(inout) :: surrogate
    integer(c_int) :: rc
    rc = c_close(surrogate%handle)
    surrogate%handle = c_null_ptr
  end subroutine simai_surrogate_close

  !> Block until a version is loaded (SIMAI_ERR_TIMEOUT after `timeout` s; < 0: no limit).
  subroutine simai_surrogate_wait(surrogate, timeout, version, stat)
    type(simai_surrogate), intent(in) :: surrogate
    real(8), intent(in) :: timeout
    integer(8), intent(out), optional :: version
    integer, intent(out), optional :: stat
    integer(c_int64_t) :: v
    if (allocated(own_message)) deallocate(own_message)
    v = 0
    call report(c_wait(surrogate%handle, real(timeout, c_double), v), stat)
    if (present(version)) version = v
  end subroutine simai_surrogate_wait

  !> y = model(x) with the newest version (checked at most every `poll` seconds); `version`
  !> is the version that answered.
  subroutine simai_surrogate_run(surrogate, x, y, version, stat)
    type(simai_surrogate), intent(in) :: surrogate
    real(4), intent(in), contiguous :: x(:, :)
    real(4), intent(out), contiguous :: y(:, :)
    integer(8), intent(out), optional :: version
    integer, intent(out), optional :: stat
    integer(c_int64_t) :: v, y_shape(MAX_NDIM)
    integer(c_int) :: rc, y_ndim
    if (allocated(own_message)) deallocate(own_message)
    v = 0
    rc = c_run(surrogate%handle, 2_c_int, int(shape(x), c_int64_t), x, y, &
               int(size(y), c_size_t), y_ndim, y_shape, COLUMN_MAJOR, v)
    if (rc == SIMAI_OK) then
      if (y_ndim /= 2) then
        rc = SIMAI_ERR_TYPE
      else if (any(y_shape(1:2) /= shape(y))) then
        rc = SIMAI_ERR_TYPE
      end if
      if (rc /= SIMAI_OK) own_message = 'the model''s output does not have the shape of y'
    end if
    if (present(version)) version = v
    call report(rc, stat)
  end subroutine simai_surrogate_run

end module simai_torch
