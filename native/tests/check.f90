! check_fortran: the Fortran side of tests/test_native_store.py.
!   check_fortran write URL   put f/a real(8) a(3,4), f/b integer(4) b(2,3,4), f/c, f/d; append
!   check_fortran read URL    read pf/a, pf/b, pf/c, pf/d that Python put; check errors
program check_fortran
  use, intrinsic :: iso_c_binding, only: c_int64_t, c_double
  use simai
  implicit none
  type(simai_store) :: store
  character(len=512) :: mode, url
  integer :: stat, i, j, k, l, failures
  real(8) :: a(3, 4), wrong(4, 3)
  integer(4) :: b(2, 3, 4)
  real(4) :: c(5)
  integer(8) :: d(2, 3, 1, 2)
  integer(c_int64_t) :: shp(32)
  integer :: rank
  character(len=8) :: typestr
  character(len=:), allocatable :: text

  failures = 0
  call get_command_argument(1, mode)
  call get_command_argument(2, url)
  call simai_open(store, trim(url), stat=stat)
  call expect(stat == SIMAI_OK, 'open: ' // simai_error_message())

  if (mode == 'write') then
    do j = 1, 4
      do i = 1, 3
        a(i, j) = 10 * i + j
      end do
    end do
    do k = 1, 4
      do j = 1, 3
        do i = 1, 2
          b(i, j, k) = 100 * i + 10 * j + k
        end do
      end do
    end do
    c = [(real(i) / 4, i = 1, 5)]
    d = reshape([(int(i, 8) * 1000000000000_8, i = 1, 12)], shape(d))
    call simai_put(store, 'f/a', a, stat=stat)
    call expect(stat == SIMAI_OK, 'put a')
    call simai_put(store, 'f/b', b, stat=stat)
    call expect(stat == SIMAI_OK, 'put b')
    call simai_put(store, 'f/c', c, stat=stat)
    call simai_put(store, 'f/d', d, stat=stat)
    call simai_put_json(store, 'f/json', '{"from": "fortran"}', stat=stat)
    call expect(stat == SIMAI_OK, 'put json')
    call simai_put_json(store, 'f/bad', '{oops', stat=stat)
    call expect(stat == SIMAI_ERR_INVALID, 'bad JSON is refused')
    call simai_append(store, 'f/stream', a, stat=stat)
    call simai_append(store, 'f/stream', 2 * a, stat=stat)
    call expect(stat == SIMAI_OK, 'append')
  else
    call simai_shape(store, 'pf/a', shp, rank, typestr, stat=stat)
    call expect(stat == SIMAI_OK .and. rank == 2 .and. all(shp(1:2) == [3, 4]) .and. &
                typestr == '<f8', 'shape of pf/a')
    call simai_get(store, 'pf/a', a, stat=stat)
    call expect(stat == SIMAI_OK, 'get pf/a: ' // simai_error_message())
    do j = 1, 4
      do i = 1, 3
        call expect(a(i, j) == ((i - 1) * 4 + (j - 1)) * 1.5d0, 'pf/a values')
      end do
    end do
    call simai_get(store, 'pf/b', b, stat=stat)
    call expect(stat == SIMAI_OK, 'get pf/b')
    do k = 1, 4
      do j = 1, 3
        do i = 1, 2
          call expect(b(i, j, k) == (i - 1) * 12 + (j - 1) * 4 + (k - 1), 'pf/b values')
        end do
      end do
    end do
    call simai_get(store, 'pf/c', c, stat=stat)
    call expect(stat == SIMAI_OK .and. all(c == [(real(i) / 2, i = 0, 4)]), 'pf/c')
    call simai_get(store, 'pf/d', d, stat=stat)
    call expect(stat == SIMAI_OK, 'get pf/d')
    do l = 1, 2
      do j = 1, 3
        do i = 1, 2
          call expect(d(i, j, 1, l) == (i - 1) * 6 + (j - 1) * 2 + (l - 1), 'pf/d values')
        end do
      end do
    end do
    call simai_get_json(store, 'pf/json', text, stat=stat)
    call expect(stat == SIMAI_OK .and. text == '{"from": "python"}', 'pf/json')
    ! errors come back in stat, and the program goes on
    call simai_get(store, 'pf/missing', a, stat=stat)
    call expect(stat == SIMAI_ERR_NOT_FOUND, 'a missing key is SIMAI_ERR_NOT_FOUND')
    call simai_get(store, 'pf/a', wrong, stat=stat)
    call expect(stat == SIMAI_ERR_TYPE, 'another shape is SIMAI_ERR_TYPE')
    call simai_get(store, 'pf/b', c, stat=stat)
    call expect(stat == SIMAI_ERR_TYPE, 'another dtype is SIMAI_ERR_TYPE')
    call simai_wait(store, 'pf/never', timeout=0.05_c_double, stat=stat)
    call expect(stat == SIMAI_ERR_TIMEOUT, 'wait times out')
    call expect(simai_exists(store, 'pf/a') .and. .not. simai_exists(store, 'pf/never'), &
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

end program check_fortran
