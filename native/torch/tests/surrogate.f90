! The Fortran side of tests/test_native_torch.py: waits for a version, runs the 4x2 test batch
! as x(4, 2), then calls until version 2 answers and runs it again. Prints "VERSION y1 .. y4"
! after each of the two runs (or "err CODE message").
program surrogate_fortran
  use, intrinsic :: iso_fortran_env, only: output_unit
  use simai
  use simai_torch
  implicit none
  type(simai_store) :: store
  type(simai_surrogate) :: model
  character(len=256) :: url, name
  real(4) :: x(4, 2), y(4, 1)
  integer(8) :: version
  integer :: i, j, stat, calls

  call get_command_argument(1, url)
  call get_command_argument(2, name)
  do j = 1, 2
    do i = 1, 4
      x(i, j) = (i - 1) * 0.5 + (j - 1) * 0.25 - 1.0
    end do
  end do
  call simai_open(store, trim(url), stat)
  if (stat /= SIMAI_OK) then
    print '(a, 1x, a)', 'err open', simai_error_message()
    stop 1
  end if
  call simai_surrogate_open(model, store, name, poll=0.2d0, trusted=.true., stat=stat)
  call check('surrogate')
  call simai_surrogate_wait(model, timeout=20d0, version=version, stat=stat)
  call check('wait')
  call simai_surrogate_run(model, x, y, version, stat)
  call check('run')
  print '(i0, 4(1x, es16.9))', version, y(:, 1)
  flush (output_unit)
  calls = 0
  do while (version < 2 .and. calls < 4000)
    call simai_surrogate_run(model, x, y, version, stat)
    call check('run')
    calls = calls + 1
    call sleep_ms()
  end do
  print '(i0, 4(1x, es16.9))', version, y(:, 1)
  call simai_surrogate_close(model)
  call simai_close(store)

contains

  subroutine check(what)
    character(*), intent(in) :: what
    if (stat /= SIMAI_OK) then
      print '(a, 1x, a, 1x, i0, 1x, a)', 'err', what, stat, simai_torch_error_message()
      stop 1
    end if
  end subroutine check

  !> about 5 ms, without extensions
  subroutine sleep_ms()
    integer(8) :: start, now, rate
    call system_clock(start, rate)
    do
      call system_clock(now)
      if (real(now - start) / real(rate) > 0.005) exit
    end do
  end subroutine sleep_ms

end program surrogate_fortran
