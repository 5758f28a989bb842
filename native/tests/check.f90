! check_fortran: the Fortran side of tests/test_native_clients.py, on any backend.
!   check_fortran write [URL]   put f/KIND/RANK for every KIND and RANK, f/json; append f/stream;
!                               put and delete f/gone; JSON that is not JSON is refused
!   check_fortran read [URL]    read pf/KIND/RANK that Python put: type, shape, every element;
!                               errors come back in stat
! Without URL the store is the run's: $SIMAI_STORE, its password in $SIMAI_STORE_PASSWORD.
!
! KIND is r4, r8, i4 or i8 (real(4), real(8), integer(4), integer(8)); RANK is 1 to 4, of shape
! (5), (3,4), (2,3,4), (2,3,1,2). Python sees the same shape and the same a[i-1, j-1, ...]:
!   written  a(i,j,...) = scale(i*10**(RANK-1) + j*10**(RANK-2) + ...)  (the indices as digits)
!   read     a(i,j,...) = scale(row-major offset of (i-1, j-1, ...))  (np.arange(n).reshape)
! where scale is x/4 for r4, 1.5*x for r8, -x for i4, x*10**12 for i8.
program check_fortran
  use, intrinsic :: iso_c_binding, only: c_int64_t, c_double
  use simai
  implicit none
  integer, parameter :: SHAPES(4, 4) = reshape([5, 1, 1, 1, 3, 4, 1, 1, 2, 3, 4, 1, 2, 3, 1, 2], &
                                               [4, 4])
  integer, parameter :: S1(1) = SHAPES(1:1, 1), S2(2) = SHAPES(1:2, 2), S3(3) = SHAPES(1:3, 3), &
                        S4(4) = SHAPES(1:4, 4)
  character(len=2), parameter :: KINDS(4) = ['r4', 'r8', 'i4', 'i8']
  character(len=3), parameter :: TYPES(4) = ['<f4', '<f8', '<i4', '<i8']
  type(simai_store) :: store
  character(len=512) :: mode, url
  integer :: stat, r, failures
  real(8) :: a(3, 4), wrong(4, 3)
  integer(4) :: b(2, 3, 4)
  real(4) :: c(5)
  character(len=:), allocatable :: text

  failures = 0
  call get_command_argument(1, mode)
  call get_command_argument(2, url)
  if (len_trim(url) > 0) then
    call simai_open(store, trim(url), stat=stat)
  else
    call simai_open(store, stat=stat)  ! $SIMAI_STORE
  end if
  call expect(stat == SIMAI_OK, 'open: ' // simai_error_message())

  if (mode == 'write') then
    do r = 1, 4
      call put_rank(r)
    end do
    call simai_put_json(store, 'f/json', '{"from": "fortran"}', stat=stat)
    call expect(stat == SIMAI_OK, 'put json')
    call simai_put_json(store, 'f/bad', '{oops', stat=stat)
    call expect(stat == SIMAI_ERR_INVALID, 'bad JSON is refused')
    a = reshape(pattern(2, .false.) * 1.5d0, S2)
    call simai_append(store, 'f/stream', a, stat=stat)
    call expect(stat == SIMAI_OK, 'append')
    call simai_append(store, 'f/stream', 2 * a, stat=stat)
    call expect(stat == SIMAI_OK, 'append')
    c = 0
    call simai_put(store, 'f/gone', c, stat=stat)
    call simai_delete(store, 'f/gone', stat=stat)
    call expect(stat == SIMAI_OK .and. .not. simai_exists(store, 'f/gone'), 'delete')
  else
    do r = 1, 4
      call get_rank(r)
    end do
    call simai_get_json(store, 'pf/json', text, stat=stat)
    call expect(stat == SIMAI_OK .and. text == '{"from": "python"}', 'pf/json')
    ! errors come back in stat, and the program goes on
    call simai_get(store, 'pf/missing', a, stat=stat)
    call expect(stat == SIMAI_ERR_NOT_FOUND, 'a missing key is SIMAI_ERR_NOT_FOUND')
    call simai_get(store, 'pf/r8/2', wrong, stat=stat)
    call expect(stat == SIMAI_ERR_TYPE, 'another shape is SIMAI_ERR_TYPE')
    call simai_get(store, 'pf/i4/3', c, stat=stat)
    call expect(stat == SIMAI_ERR_TYPE, 'another rank and dtype is SIMAI_ERR_TYPE')
    call simai_get(store, 'pf/i4/3', b, stat=stat)  ! the right rank and shape, int32 ...
    call expect(stat == SIMAI_OK, 'get pf/i4/3 as integer(4)')
    call simai_get(store, 'pf/r4/3', b, stat=stat)  ! ... but float32 is another dtype
    call expect(stat == SIMAI_ERR_TYPE, 'another dtype of the same size is SIMAI_ERR_TYPE')
    call simai_wait(store, 'pf/never', timeout=0.05_c_double, stat=stat)
    call expect(stat == SIMAI_ERR_TIMEOUT, 'wait times out')
    call expect(simai_exists(store, 'pf/r8/2') .and. .not. simai_exists(store, 'pf/never'), &
                'exists')
  end if
  call simai_close(store)
  if (failures == 0) print '(a)', 'ok'

contains

  subroutine expect(ok, what)
    logical, intent(in) :: ok
    character(*), intent(in) :: what
    if (.not. ok) then
      print '(a)', 'failed: ' // what
      failures = failures + 1
    end if
  end subroutine expect

  !> The key of KINDS(k) at rank r under `prefix` ("f/r8/2").
  function key(prefix, k, r) result(name)
    character(*), intent(in) :: prefix
    integer, intent(in) :: k, r
    character(len=:), allocatable :: name
    name = prefix // '/' // KINDS(k) // '/' // achar(iachar('0') + r)
  end function key

  !> The unscaled values of the rank-r fixture, in Fortran's (column-major) element order:
  !> the 1-based indices as decimal digits, or (rowmajor) the row-major offset of the element.
  function pattern(r, rowmajor) result(x)
    integer, intent(in) :: r
    logical, intent(in) :: rowmajor
    real(8), allocatable :: x(:)
    integer :: m, d, idx(4), stride
    allocate(x(product(SHAPES(1:r, r))))
    do m = 0, size(x) - 1
      stride = 1
      do d = 1, r  ! the 0-based index of element m (column-major) in dimension d
        idx(d) = mod(m / stride, SHAPES(d, r))
        stride = stride * SHAPES(d, r)
      end do
      x(m + 1) = 0
      do d = 1, r
        if (rowmajor) then
          x(m + 1) = x(m + 1) + idx(d) * product(SHAPES(d + 1:r, r))
        else
          x(m + 1) = x(m + 1) + (idx(d) + 1) * 10d0**(r - d)
        end if
      end do
    end do
  end function pattern

  !> Put the four kinds of the rank-r fixture, f/KIND/r.
  subroutine put_rank(r)
    integer, intent(in) :: r
    real(8), allocatable :: x(:)
    integer :: k, st(4)
    x = pattern(r, .false.)
    select case (r)
    case (1)
      call simai_put(store, key('f', 1, r), reshape(real(x / 4, 4), S1), stat=st(1))
      call simai_put(store, key('f', 2, r), reshape(x * 1.5d0, S1), stat=st(2))
      call simai_put(store, key('f', 3, r), reshape(-int(x, 4), S1), stat=st(3))
      call simai_put(store, key('f', 4, r), reshape(int(x, 8) * 10_8**12, S1), stat=st(4))
    case (2)
      call simai_put(store, key('f', 1, r), reshape(real(x / 4, 4), S2), stat=st(1))
      call simai_put(store, key('f', 2, r), reshape(x * 1.5d0, S2), stat=st(2))
      call simai_put(store, key('f', 3, r), reshape(-int(x, 4), S2), stat=st(3))
      call simai_put(store, key('f', 4, r), reshape(int(x, 8) * 10_8**12, S2), stat=st(4))
    case (3)
      call simai_put(store, key('f', 1, r), reshape(real(x / 4, 4), S3), stat=st(1))
      call simai_put(store, key('f', 2, r), reshape(x * 1.5d0, S3), stat=st(2))
      call simai_put(store, key('f', 3, r), reshape(-int(x, 4), S3), stat=st(3))
      call simai_put(store, key('f', 4, r), reshape(int(x, 8) * 10_8**12, S3), stat=st(4))
    case (4)
      call simai_put(store, key('f', 1, r), reshape(real(x / 4, 4), S4), stat=st(1))
      call simai_put(store, key('f', 2, r), reshape(x * 1.5d0, S4), stat=st(2))
      call simai_put(store, key('f', 3, r), reshape(-int(x, 4), S4), stat=st(3))
      call simai_put(store, key('f', 4, r), reshape(int(x, 8) * 10_8**12, S4), stat=st(4))
    end select
    do k = 1, 4
      call expect(st(k) == SIMAI_OK, 'put ' // key('f', k, r) // ': ' // simai_error_message())
    end do
  end subroutine put_rank

  !> Read the four kinds of the rank-r array Python put, pf/KIND/r, into arrays that hold
  !> something else first, and check their type, shape and every element.
  subroutine get_rank(r)
    integer, intent(in) :: r
    real(8), allocatable :: x(:)
    real(4) :: f1(S1(1)), f2(S2(1), S2(2)), f3(S3(1), S3(2), S3(3)), &
               f4(S4(1), S4(2), S4(3), S4(4))
    real(8) :: d1(S1(1)), d2(S2(1), S2(2)), d3(S3(1), S3(2), S3(3)), &
               d4(S4(1), S4(2), S4(3), S4(4))
    integer(4) :: i1(S1(1)), i2(S2(1), S2(2)), i3(S3(1), S3(2), S3(3)), &
                  i4(S4(1), S4(2), S4(3), S4(4))
    integer(8) :: l1(S1(1)), l2(S2(1), S2(2)), l3(S3(1), S3(2), S3(3)), &
                  l4(S4(1), S4(2), S4(3), S4(4))
    integer(c_int64_t) :: shp(32)
    integer :: k, rank, st(4)
    logical :: same(4)
    character(len=8) :: typestr
    x = pattern(r, .true.)
    do k = 1, 4
      call simai_shape(store, key('pf', k, r), shp, rank, typestr, stat=stat)
      call expect(stat == SIMAI_OK .and. rank == r .and. all(shp(1:r) == SHAPES(1:r, r)) .and. &
                  typestr == TYPES(k), 'shape and type of ' // key('pf', k, r))
    end do
    f1 = -7; f2 = -7; f3 = -7; f4 = -7; d1 = -7; d2 = -7; d3 = -7; d4 = -7
    i1 = -7; i2 = -7; i3 = -7; i4 = -7; l1 = -7; l2 = -7; l3 = -7; l4 = -7
    select case (r)
    case (1)
      call simai_get(store, key('pf', 1, r), f1, stat=st(1))
      call simai_get(store, key('pf', 2, r), d1, stat=st(2))
      call simai_get(store, key('pf', 3, r), i1, stat=st(3))
      call simai_get(store, key('pf', 4, r), l1, stat=st(4))
      same = [all(f1 == real(x / 4, 4)), all(d1 == x * 1.5d0), all(i1 == -int(x, 4)), &
              all(l1 == int(x, 8) * 10_8**12)]
    case (2)
      call simai_get(store, key('pf', 1, r), f2, stat=st(1))
      call simai_get(store, key('pf', 2, r), d2, stat=st(2))
      call simai_get(store, key('pf', 3, r), i2, stat=st(3))
      call simai_get(store, key('pf', 4, r), l2, stat=st(4))
      same = [all(reshape(f2, [size(x)]) == real(x / 4, 4)), &
              all(reshape(d2, [size(x)]) == x * 1.5d0), &
              all(reshape(i2, [size(x)]) == -int(x, 4)), &
              all(reshape(l2, [size(x)]) == int(x, 8) * 10_8**12)]
    case (3)
      call simai_get(store, key('pf', 1, r), f3, stat=st(1))
      call simai_get(store, key('pf', 2, r), d3, stat=st(2))
      call simai_get(store, key('pf', 3, r), i3, stat=st(3))
      call simai_get(store, key('pf', 4, r), l3, stat=st(4))
      same = [all(reshape(f3, [size(x)]) == real(x / 4, 4)), &
              all(reshape(d3, [size(x)]) == x * 1.5d0), &
              all(reshape(i3, [size(x)]) == -int(x, 4)), &
              all(reshape(l3, [size(x)]) == int(x, 8) * 10_8**12)]
    case (4)
      call simai_get(store, key('pf', 1, r), f4, stat=st(1))
      call simai_get(store, key('pf', 2, r), d4, stat=st(2))
      call simai_get(store, key('pf', 3, r), i4, stat=st(3))
      call simai_get(store, key('pf', 4, r), l4, stat=st(4))
      same = [all(reshape(f4, [size(x)]) == real(x / 4, 4)), &
              all(reshape(d4, [size(x)]) == x * 1.5d0), &
              all(reshape(i4, [size(x)]) == -int(x, 4)), &
              all(reshape(l4, [size(x)]) == int(x, 8) * 10_8**12)]
    end select
    do k = 1, 4
      call expect(st(k) == SIMAI_OK, 'get ' // key('pf', k, r) // ': ' // simai_error_message())
      call expect(same(k), 'the values of ' // key('pf', k, r))
    end do
  end subroutine get_rank

end program check_fortran
