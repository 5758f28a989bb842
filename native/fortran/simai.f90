! simai: the Fortran 2008 module over simai's C client (simai.h), through iso_c_binding.
!
!   use simai
!   type(simai_store) :: store
!   real(8) :: a(nx, ny)
!   integer :: stat
!   call simai_open(store, stat=stat)                 ! $SIMAI_STORE, else local://default
!   call simai_put(store, 'field/0', a, stat=stat)    ! Python: store.get('field/0').shape == (nx, ny)
!   call simai_get(store, 'field/0', a, stat=stat)    ! a must have the stored shape
!   call simai_close(store)
!
! Arrays: real(4), real(8), integer(4), integer(8), rank 1 to 4. A Fortran array a(nx, ny) is
! stored as the row-major array of shape (nx, ny) that Python sees, with a[i, j] == a(i+1, j+1):
! it is transposed on the way in and out, so both languages index it the same way.
!
! Streams: simai_append; simai_stream_create, simai_stream_close, simai_stream_delete; consumer
! groups read each entry once, in order: simai_group_position, then simai_group_get into an
! array of the entries' type and shape until stat is SIMAI_ERR_ENDED. simai_destroy removes a
! local or file store.
!
! Errors: every routine takes an optional integer `stat`, 0 (SIMAI_OK) on success or one of
! the SIMAI_ERR_* codes; simai_error_message() then says what went wrong. Without `stat`, an
! error's message is written to error_unit and the program goes on. Nothing stops it.
! Keys lose their trailing blanks (a key never ends with a blank here).
module simai
  use, intrinsic :: iso_c_binding
  use, intrinsic :: iso_fortran_env, only: error_unit
  implicit none
  private

  public :: simai_store, simai_open, simai_close, simai_put, simai_get, simai_append
  public :: simai_wait, simai_exists, simai_delete, simai_put_json, simai_get_json
  public :: simai_shape, simai_error_message
  public :: simai_stream_create, simai_stream_delete, simai_stream_close, simai_destroy
  public :: simai_group_position, simai_group_get

  integer, parameter, public :: SIMAI_OK = 0, SIMAI_ERR_INVALID = 1, SIMAI_ERR_NOT_FOUND = 2, &
    SIMAI_ERR_TIMEOUT = 3, SIMAI_ERR_CORRUPT = 4, SIMAI_ERR_TYPE = 5, SIMAI_ERR_TOO_SMALL = 6, &
    SIMAI_ERR_PERMISSION = 7, SIMAI_ERR_FULL = 8, SIMAI_ERR_CLOSED = 9, SIMAI_ERR_IO = 10, &
    SIMAI_ERR_NOMEM = 11, SIMAI_ERR_ENDED = 12, SIMAI_ERR_TRIMMED = 13, &
    SIMAI_ERR_UNSUPPORTED = 14, SIMAI_ERR_STREAM_CLOSED = 15

  integer(c_int), parameter :: COLUMN_MAJOR = 1, MAX_NDIM = 32

  !> A handle on a store; simai_close lets go of it.
  type :: simai_store
    type(c_ptr) :: handle = c_null_ptr
  end type simai_store

  !> simai_info of simai.h
  type, bind(c) :: info_t
    integer(c_int32_t) :: kind, ndim
    character(kind=c_char) :: dtype(16)
    integer(c_int64_t) :: nbytes
    integer(c_int64_t) :: shape(MAX_NDIM)
  end type info_t

  interface simai_put
    module procedure put_r4_1, put_r4_2, put_r4_3, put_r4_4
    module procedure put_r8_1, put_r8_2, put_r8_3, put_r8_4
    module procedure put_i4_1, put_i4_2, put_i4_3, put_i4_4
    module procedure put_i8_1, put_i8_2, put_i8_3, put_i8_4
  end interface simai_put

  interface simai_get
    module procedure get_r4_1, get_r4_2, get_r4_3, get_r4_4
    module procedure get_r8_1, get_r8_2, get_r8_3, get_r8_4
    module procedure get_i4_1, get_i4_2, get_i4_3, get_i4_4
    module procedure get_i8_1, get_i8_2, get_i8_3, get_i8_4
  end interface simai_get

  interface simai_append
    module procedure append_r4_1, append_r4_2, append_r4_3, append_r4_4
    module procedure append_r8_1, append_r8_2, append_r8_3, append_r8_4
    module procedure append_i4_1, append_i4_2, append_i4_3, append_i4_4
    module procedure append_i8_1, append_i8_2, append_i8_3, append_i8_4
  end interface simai_append

  interface simai_group_get
    module procedure group_get_r4_1, group_get_r4_2, group_get_r4_3, group_get_r4_4
    module procedure group_get_r8_1, group_get_r8_2, group_get_r8_3, group_get_r8_4
    module procedure group_get_i4_1, group_get_i4_2, group_get_i4_3, group_get_i4_4
    module procedure group_get_i8_1, group_get_i8_2, group_get_i8_3, group_get_i8_4
  end interface simai_group_get
  interface
    integer(c_int) function c_open(store) bind(c, name='simai_open')
      import :: c_int, c_ptr
      type(c_ptr), intent(out) :: store
    end function c_open
    integer(c_int) function c_open_url(url, store) bind(c, name='simai_open_url')
      import :: c_int, c_ptr, c_char
      character(kind=c_char), intent(in) :: url(*)
      type(c_ptr), intent(out) :: store
    end function c_open_url
    integer(c_int) function c_close(store) bind(c, name='simai_close')
      import :: c_int, c_ptr
      type(c_ptr), value :: store
    end function c_close
    integer(c_int) function c_put_array(store, key, dtype, ndim, shape, data, flags) &
        bind(c, name='simai_put_array')
      import :: c_int, c_ptr, c_char, c_int64_t
      type(c_ptr), value :: store, data
      character(kind=c_char), intent(in) :: key(*), dtype(*)
      integer(c_int), value :: ndim, flags
      integer(c_int64_t), intent(in) :: shape(*)
    end function c_put_array
    integer(c_int) function c_get_array(store, key, dtype, ndim, shape, data, flags) &
        bind(c, name='simai_get_array')
      import :: c_int, c_ptr, c_char, c_int64_t
      type(c_ptr), value :: store, data
      character(kind=c_char), intent(in) :: key(*), dtype(*)
      integer(c_int), value :: ndim, flags
      integer(c_int64_t), intent(in) :: shape(*)
    end function c_get_array
    integer(c_int) function c_append_array(store, stream, dtype, ndim, shape, data, flags, &
        timeout, index) bind(c, name='simai_append_array')
      import :: c_int, c_ptr, c_char, c_int64_t, c_double
      type(c_ptr), value :: store, data
      character(kind=c_char), intent(in) :: stream(*), dtype(*)
      integer(c_int), value :: ndim, flags
      integer(c_int64_t), intent(in) :: shape(*)
      real(c_double), value :: timeout
      integer(c_int64_t), intent(out) :: index
    end function c_append_array
    integer(c_int) function c_info_get(store, key, info) bind(c, name='simai_info_get')
      import :: c_int, c_ptr, c_char, info_t
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: key(*)
      type(info_t), intent(out) :: info
    end function c_info_get
    integer(c_int) function c_put_json(store, key, json) bind(c, name='simai_put_json')
      import :: c_int, c_ptr, c_char
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: key(*), json(*)
    end function c_put_json
    integer(c_int) function c_get_json(store, key, buf, cap, n) bind(c, name='simai_get_json')
      import :: c_int, c_ptr, c_char, c_size_t
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: key(*)
      character(kind=c_char), intent(out) :: buf(*)
      integer(c_size_t), value :: cap
      integer(c_size_t), intent(out) :: n
    end function c_get_json
    integer(c_int) function c_wait(store, key, timeout) bind(c, name='simai_wait')
      import :: c_int, c_ptr, c_char, c_double
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: key(*)
      real(c_double), value :: timeout
    end function c_wait
    integer(c_int) function c_exists(store, key, exists) bind(c, name='simai_exists')
      import :: c_int, c_ptr, c_char
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: key(*)
      integer(c_int), intent(out) :: exists
    end function c_exists
    integer(c_int) function c_delete(store, key, existed) bind(c, name='simai_delete')
      import :: c_int, c_ptr, c_char
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: key(*)
      integer(c_int), intent(out) :: existed
    end function c_delete
    integer(c_int) function c_stream_create(store, stream, maxlen, policy) &
        bind(c, name='simai_stream_create')
      import :: c_ptr, c_char, c_int, c_int64_t
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: stream(*), policy(*)
      integer(c_int64_t), value :: maxlen
    end function c_stream_create
    integer(c_int) function c_stream_delete(store, stream, existed) &
        bind(c, name='simai_stream_delete')
      import :: c_ptr, c_char, c_int
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: stream(*)
      integer(c_int), intent(out) :: existed
    end function c_stream_delete
    integer(c_int) function c_stream_close(store, stream) bind(c, name='simai_stream_close')
      import :: c_ptr, c_char, c_int
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: stream(*)
    end function c_stream_close
    integer(c_int) function c_destroy(store) bind(c, name='simai_destroy')
      import :: c_ptr, c_int
      type(c_ptr), value :: store
    end function c_destroy
    integer(c_int) function c_group_position(store, stream, group, index) &
        bind(c, name='simai_group_position')
      import :: c_ptr, c_char, c_int, c_int64_t
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: stream(*), group(*)
      integer(c_int64_t), intent(out) :: index
    end function c_group_position
    integer(c_int) function c_group_get_array(store, stream, group, index, timeout, dtype, &
                                              ndim, shape, data, flags) &
        bind(c, name='simai_group_get_array')
      import :: c_ptr, c_char, c_int, c_int64_t, c_double
      type(c_ptr), value :: store
      character(kind=c_char), intent(in) :: stream(*), group(*), dtype(*)
      integer(c_int64_t), intent(inout) :: index
      real(c_double), value :: timeout
      integer(c_int), value :: ndim, flags
      integer(c_int64_t), intent(in) :: shape(*)
      type(c_ptr), value :: data
    end function c_group_get_array
    type(c_ptr) function c_last_error() bind(c, name='simai_last_error')
      import :: c_ptr
    end function c_last_error
    integer(c_size_t) function c_strlen(s) bind(c, name='strlen')
      import :: c_size_t, c_ptr
      type(c_ptr), value :: s
    end function c_strlen
  end interface

contains

  ! --- errors --------------------------------------------------------------------------------

  !> The message of the last call that failed in this thread.
  function simai_error_message() result(message)
    character(len=:), allocatable :: message
    character(kind=c_char), pointer :: chars(:)
    type(c_ptr) :: p
    integer :: i, n
    p = c_last_error()
    n = int(c_strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate(character(len=n) :: message)
    do i = 1, n
      message(i:i) = chars(i)
    end do
  end function simai_error_message

  !> Hand `rc` to the caller's stat, or report it on error_unit when there is none.
  subroutine report(rc, stat)
    integer(c_int), intent(in) :: rc
    integer, intent(out), optional :: stat
    if (present(stat)) then
      stat = int(rc)
    else if (rc /= SIMAI_OK) then
      write (error_unit, '(a)') 'simai: ' // simai_error_message()
    end if
  end subroutine report

  !> A Fortran string as a C string: trailing blanks dropped, NUL added.
  pure function cstr(s) result(c)
    character(*), intent(in) :: s
    character(kind=c_char, len=len_trim(s) + 1) :: c
    c = trim(s) // c_null_char
  end function cstr

  !> The numpy type string of this machine's `code` ("f8" -> "<f8" on little-endian machines).
  function dtype(code) result(typestr)
    character(*), intent(in) :: code
    character(len=4) :: typestr
    integer(c_int8_t) :: first(4)
    first = transfer(1_c_int32_t, first)
    if (first(1) == 1) then
      typestr = '<' // code // c_null_char
    else
      typestr = '>' // code // c_null_char
    end if
  end function dtype

  ! --- opening -------------------------------------------------------------------------------

  !> Open the store at `url` (local://NAME, local:///dir), else the run's store ($SIMAI_STORE,
  !> else local://default).
  subroutine simai_open(store, url, stat)
    type(simai_store), intent(out) :: store
    character(*), intent(in), optional :: url
    integer, intent(out), optional :: stat
    if (present(url)) then
      call report(c_open_url(cstr(url), store%handle), stat)
    else
      call report(c_open(store%handle), stat)
    end if
  end subroutine simai_open

  subroutine simai_close(store)
    type(simai_store), intent(inout) :: store
    integer(c_int) :: rc
    rc = c_close(store%handle)
    store%handle = c_null_ptr
  end subroutine simai_close

  ! --- arrays: the generic procedures call these with the array's address and shape ---------

  subroutine put_any(store, key, code, shp, data, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key, code
    integer(c_int64_t), intent(in) :: shp(:)
    type(c_ptr), intent(in) :: data
    integer, intent(out), optional :: stat
    call report(c_put_array(store%handle, cstr(key), dtype(code), size(shp, kind=c_int), shp, &
                            data, COLUMN_MAJOR), stat)
  end subroutine put_any

  subroutine get_any(store, key, code, shp, data, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key, code
    integer(c_int64_t), intent(in) :: shp(:)
    type(c_ptr), intent(in) :: data
    integer, intent(out), optional :: stat
    call report(c_get_array(store%handle, cstr(key), dtype(code), size(shp, kind=c_int), shp, &
                            data, COLUMN_MAJOR), stat)
  end subroutine get_any

  subroutine append_any(store, stream, code, shp, data, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, code
    integer(c_int64_t), intent(in) :: shp(:)
    type(c_ptr), intent(in) :: data
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    real(c_double) :: seconds
    integer(c_int64_t) :: at
    seconds = -1
    if (present(timeout)) seconds = timeout
    call report(c_append_array(store%handle, cstr(stream), dtype(code), size(shp, kind=c_int), &
                               shp, data, COLUMN_MAJOR, seconds, at), stat)
    if (present(index)) index = at
  end subroutine append_any

  !> The shape of the array under `key` (as a Fortran array of that shape has it), its rank,
  !> and its numpy type string ("<f8"), for allocating before simai_get.
  subroutine simai_shape(store, key, shp, rank, typestr, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(out) :: shp(MAX_NDIM)
    integer, intent(out) :: rank
    character(len=*), intent(out), optional :: typestr
    integer, intent(out), optional :: stat
    type(info_t) :: info
    integer(c_int) :: rc
    integer :: i
    shp = 0
    rank = 0
    rc = c_info_get(store%handle, cstr(key), info)
    if (rc == SIMAI_OK .and. info%kind /= 1) rc = SIMAI_ERR_TYPE  ! not an array
    if (rc == SIMAI_OK) then
      rank = info%ndim
      shp(1:rank) = info%shape(1:rank)
      if (present(typestr)) then
        typestr = ''
        do i = 1, min(len(typestr), 16)
          if (info%dtype(i) == c_null_char) exit
          typestr(i:i) = info%dtype(i)
        end do
      end if
    end if
    call report(rc, stat)
  end subroutine simai_shape

  ! --- other values --------------------------------------------------------------------------

  !> Put JSON text (checked: text that is not JSON is SIMAI_ERR_INVALID).
  subroutine simai_put_json(store, key, text, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key, text
    integer, intent(out), optional :: stat
    call report(c_put_json(store%handle, cstr(key), text // c_null_char), stat)
  end subroutine simai_put_json

  !> The JSON text under `key`.
  subroutine simai_get_json(store, key, text, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    character(len=:), allocatable, intent(out) :: text
    integer, intent(out), optional :: stat
    character(kind=c_char), allocatable :: buf(:)
    integer(c_size_t) :: n
    integer(c_int) :: rc
    integer :: i
    allocate(buf(256))
    rc = c_get_json(store%handle, cstr(key), buf, size(buf, kind=c_size_t), n)
    if (rc == SIMAI_ERR_TOO_SMALL) then
      deallocate(buf)
      allocate(buf(n + 1))
      rc = c_get_json(store%handle, cstr(key), buf, size(buf, kind=c_size_t), n)
    end if
    if (rc /= SIMAI_OK) n = 0
    allocate(character(len=n) :: text)
    do i = 1, int(n)
      text(i:i) = buf(i)
    end do
    call report(rc, stat)
  end subroutine simai_get_json

  !> Block until `key` exists; SIMAI_ERR_TIMEOUT after `timeout` seconds (absent: no limit).
  subroutine simai_wait(store, key, timeout, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), optional :: timeout
    integer, intent(out), optional :: stat
    real(c_double) :: seconds
    seconds = -1
    if (present(timeout)) seconds = timeout
    call report(c_wait(store%handle, cstr(key), seconds), stat)
  end subroutine simai_wait

  logical function simai_exists(store, key, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer, intent(out), optional :: stat
    integer(c_int) :: exists
    exists = 0
    call report(c_exists(store%handle, cstr(key), exists), stat)
    simai_exists = exists /= 0
  end function simai_exists

  subroutine simai_delete(store, key, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer, intent(out), optional :: stat
    integer(c_int) :: existed
    call report(c_delete(store%handle, cstr(key), existed), stat)
  end subroutine simai_delete

  ! --- streams and consumer groups -----------------------------------------------------------

  !> Declare stream `stream` before its first append: at most `maxlen` values (0 or absent:
  !> unbounded), `policy` 'block' (the default) or 'drop_oldest' (simai_stream_create in
  !> simai.h: the same bounds again do nothing, other bounds are SIMAI_ERR_INVALID).
  subroutine simai_stream_create(store, stream, maxlen, policy, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream
    integer, intent(in), optional :: maxlen
    character(*), intent(in), optional :: policy
    integer, intent(out), optional :: stat
    integer(c_int64_t) :: bound
    bound = 0
    if (present(maxlen)) bound = maxlen
    if (present(policy)) then
      call report(c_stream_create(store%handle, cstr(stream), bound, cstr(policy)), stat)
    else
      call report(c_stream_create(store%handle, cstr(stream), bound, cstr('block')), stat)
    end if
  end subroutine simai_stream_create

  !> Delete a stream, its bounds and its consumer groups; `existed` says whether there was one.
  subroutine simai_stream_delete(store, stream, existed, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream
    logical, intent(out), optional :: existed
    integer, intent(out), optional :: stat
    integer(c_int) :: was
    was = 0
    call report(c_stream_delete(store%handle, cstr(stream), was), stat)
    if (present(existed)) existed = was /= 0
  end subroutine simai_stream_delete

  !> Mark a stream finished: group readers get SIMAI_ERR_ENDED after its last value.
  subroutine simai_stream_close(store, stream, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream
    integer, intent(out), optional :: stat
    call report(c_stream_close(store%handle, cstr(stream)), stat)
  end subroutine simai_stream_close

  !> Delete the store and everything in it (local and file stores; simai_destroy in simai.h).
  !> Every later call on it is SIMAI_ERR_CLOSED: simai_close it.
  subroutine simai_destroy(store, stat)
    type(simai_store), intent(in) :: store
    integer, intent(out), optional :: stat
    call report(c_destroy(store%handle), stat)
  end subroutine simai_destroy

  !> The index consumer group `group` reads next: its recorded position, 0 for a new group.
  subroutine simai_group_position(store, stream, group, index, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(out) :: index
    integer, intent(out), optional :: stat
    index = 0
    call report(c_group_position(store%handle, cstr(stream), cstr(group), index), stat)
  end subroutine simai_group_position

  subroutine group_get_any(store, stream, group, index, code, shp, data, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group, code
    integer(c_int64_t), intent(inout) :: index
    integer(c_int64_t), intent(in) :: shp(:)
    type(c_ptr), intent(in) :: data
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    real(c_double) :: seconds
    seconds = -1
    if (present(timeout)) seconds = timeout
    call report(c_group_get_array(store%handle, cstr(stream), cstr(group), index, seconds, &
                                  dtype(code), size(shp, kind=c_int), shp, data, &
                                  COLUMN_MAJOR), stat)
  end subroutine group_get_any

  ! --- the specific procedures of simai_put, simai_get and simai_append ---------------------

  subroutine put_r4_1(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(in), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_r4_1

  subroutine put_r4_2(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(in), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_r4_2

  subroutine put_r4_3(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(in), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_r4_3

  subroutine put_r4_4(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(in), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_r4_4

  subroutine put_r8_1(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_r8_1

  subroutine put_r8_2(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_r8_2

  subroutine put_r8_3(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_r8_3

  subroutine put_r8_4(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_r8_4

  subroutine put_i4_1(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(in), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_i4_1

  subroutine put_i4_2(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(in), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_i4_2

  subroutine put_i4_3(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(in), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_i4_3

  subroutine put_i4_4(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(in), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_i4_4

  subroutine put_i8_1(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(in), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_i8_1

  subroutine put_i8_2(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(in), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_i8_2

  subroutine put_i8_3(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(in), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_i8_3

  subroutine put_i8_4(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(in), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    call put_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine put_i8_4

  subroutine get_r4_1(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(inout), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_r4_1

  subroutine get_r4_2(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(inout), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_r4_2

  subroutine get_r4_3(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(inout), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_r4_3

  subroutine get_r4_4(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(inout), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_r4_4

  subroutine get_r8_1(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(inout), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_r8_1

  subroutine get_r8_2(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(inout), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_r8_2

  subroutine get_r8_3(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(inout), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_r8_3

  subroutine get_r8_4(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(inout), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_r8_4

  subroutine get_i4_1(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(inout), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_i4_1

  subroutine get_i4_2(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(inout), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_i4_2

  subroutine get_i4_3(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(inout), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_i4_3

  subroutine get_i4_4(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(inout), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_i4_4

  subroutine get_i8_1(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(inout), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_i8_1

  subroutine get_i8_2(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(inout), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_i8_2

  subroutine get_i8_3(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(inout), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_i8_3

  subroutine get_i8_4(store, key, a, stat)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(inout), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    call get_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat)
  end subroutine get_i8_4

  subroutine append_r4_1(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(in), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_r4_1

  subroutine append_r4_2(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(in), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_r4_2

  subroutine append_r4_3(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(in), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_r4_3

  subroutine append_r4_4(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_float), intent(in), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'f4', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_r4_4

  subroutine append_r8_1(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_r8_1

  subroutine append_r8_2(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_r8_2

  subroutine append_r8_3(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_r8_3

  subroutine append_r8_4(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    real(c_double), intent(in), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'f8', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_r8_4

  subroutine append_i4_1(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(in), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_i4_1

  subroutine append_i4_2(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(in), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_i4_2

  subroutine append_i4_3(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(in), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_i4_3

  subroutine append_i4_4(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int32_t), intent(in), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'i4', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_i4_4

  subroutine append_i8_1(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(in), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_i8_1

  subroutine append_i8_2(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(in), target, contiguous :: a(:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_i8_2

  subroutine append_i8_3(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(in), target, contiguous :: a(:,:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_i8_3

  subroutine append_i8_4(store, key, a, stat, timeout, index)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: key
    integer(c_int64_t), intent(in), target, contiguous :: a(:,:,:,:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    integer(c_int64_t), intent(out), optional :: index
    call append_any(store, key, 'i8', shape(a, c_int64_t), c_loc(a), stat, timeout, index)
  end subroutine append_i8_4
  subroutine group_get_r4_1(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    real(c_float), intent(inout), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'f4', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_r4_1

  subroutine group_get_r4_2(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    real(c_float), intent(inout), target, contiguous :: a(:, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'f4', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_r4_2

  subroutine group_get_r4_3(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    real(c_float), intent(inout), target, contiguous :: a(:, :, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'f4', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_r4_3

  subroutine group_get_r4_4(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    real(c_float), intent(inout), target, contiguous :: a(:, :, :, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'f4', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_r4_4

  subroutine group_get_r8_1(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    real(c_double), intent(inout), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'f8', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_r8_1

  subroutine group_get_r8_2(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    real(c_double), intent(inout), target, contiguous :: a(:, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'f8', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_r8_2

  subroutine group_get_r8_3(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    real(c_double), intent(inout), target, contiguous :: a(:, :, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'f8', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_r8_3

  subroutine group_get_r8_4(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    real(c_double), intent(inout), target, contiguous :: a(:, :, :, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'f8', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_r8_4

  subroutine group_get_i4_1(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    integer(c_int32_t), intent(inout), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'i4', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_i4_1

  subroutine group_get_i4_2(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    integer(c_int32_t), intent(inout), target, contiguous :: a(:, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'i4', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_i4_2

  subroutine group_get_i4_3(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    integer(c_int32_t), intent(inout), target, contiguous :: a(:, :, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'i4', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_i4_3

  subroutine group_get_i4_4(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    integer(c_int32_t), intent(inout), target, contiguous :: a(:, :, :, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'i4', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_i4_4

  subroutine group_get_i8_1(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    integer(c_int64_t), intent(inout), target, contiguous :: a(:)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'i8', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_i8_1

  subroutine group_get_i8_2(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    integer(c_int64_t), intent(inout), target, contiguous :: a(:, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'i8', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_i8_2

  subroutine group_get_i8_3(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    integer(c_int64_t), intent(inout), target, contiguous :: a(:, :, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'i8', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_i8_3

  subroutine group_get_i8_4(store, stream, group, index, a, stat, timeout)
    type(simai_store), intent(in) :: store
    character(*), intent(in) :: stream, group
    integer(c_int64_t), intent(inout) :: index
    integer(c_int64_t), intent(inout), target, contiguous :: a(:, :, :, :)
    integer, intent(out), optional :: stat
    real(c_double), intent(in), optional :: timeout
    call group_get_any(store, stream, group, index, 'i8', shape(a, c_int64_t), c_loc(a), &
                       stat, timeout)
  end subroutine group_get_i8_4
end module simai
