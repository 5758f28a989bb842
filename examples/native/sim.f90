! heat: a 1-D heat equation split over MPI ranks, whose kernel a surrogate takes over.
!
!   mpiexec -n RANKS heat_fortran POINTS STEPS WARMUP CHECK_EVERY MAX_ERROR POLL
!
! Each rank holds POINTS cells of a periodic rod (halo cells u(0), u(POINTS+1) from its
! neighbours) and steps u_i <- u_i + R (u_{i-1} - 2 u_i + u_{i+1}). For the first WARMUP steps
! it runs this exact kernel and appends its subdomain to the run's stream `heat/samples`, one
! (POINTS, 4) real(8) array a step: the columns u_{i-1}, u_i, u_{i+1} and the updated u_i.
! Then it waits for the trainer's first version of the model `heat` and steps with it, through
! libsimai_torch, which swaps in newer versions at most every POLL seconds. Every CHECK_EVERY
! surrogate steps it also runs the exact kernel, appends that sample too, and compares the
! updates (relative L2 of u_new - u); above MAX_ERROR it falls back to the exact step. It logs
! each version the first step it answers, and at the end each rank puts what it did as JSON
! under `heat/report/RANK`. examples/native/sim.c is the same program in C.
program heat
  use, intrinsic :: iso_fortran_env, only: error_unit
  use mpi_f08
  use simai
  use simai_torch
  implicit none

  real(8), parameter :: R = 0.25d0              ! alpha dt / dx^2: stable up to 0.5
  integer, parameter :: MAX_VERSIONS = 64       ! the versions a rank records, in order
  integer :: n, steps, warmup, check_every, rank, ranks, left, right, stat, step
  real(8) :: max_error, poll
  real(8), allocatable :: u(:), exact(:), next(:), sample(:, :)
  real(4), allocatable :: x(:, :), y(:, :)
  type(simai_store) :: store
  type(simai_surrogate) :: model
  integer(8) :: version, used(MAX_VERSIONS)
  integer :: appended = 0, calls = 0, checks = 0, passed = 0, fallbacks = 0, errors = 0, nused = 0
  logical :: ready = .false.

  call MPI_Init()
  call MPI_Comm_rank(MPI_COMM_WORLD, rank)
  call MPI_Comm_size(MPI_COMM_WORLD, ranks)
  left = modulo(rank - 1, ranks)
  right = modulo(rank + 1, ranks)
  if (command_argument_count() /= 6) &
    call fail('usage: heat_fortran POINTS STEPS WARMUP CHECK_EVERY MAX_ERROR POLL')
  n = int_arg(1)
  steps = int_arg(2)
  warmup = int_arg(3)
  check_every = int_arg(4)
  max_error = real_arg(5)
  poll = real_arg(6)
  allocate(u(0:n + 1), exact(n), next(n), sample(n, 4), x(n, 3), y(n, 1))
  call initial(u)

  call simai_open(store, stat=stat)             ! the run's store, from $SIMAI_STORE
  if (stat /= SIMAI_OK) call fail(simai_error_message())
  call simai_surrogate_open(model, store, 'heat', poll=poll, trusted=.true., stat=stat)
  if (stat /= SIMAI_OK) call fail(simai_torch_error_message())

  do step = 1, steps
    call exchange_halos(u)
    if (step <= warmup) then
      call exact_kernel(u, next)
      call append_sample(next)
    else
      call surrogate_step(step)
    end if
    u(1:n) = next
  end do

  call put_report()
  call simai_surrogate_close(model)
  call simai_close(store)
  call MPI_Finalize()

contains

  integer function int_arg(i)
    integer, intent(in) :: i
    character(len=64) :: text
    call get_command_argument(i, text)
    read (text, *) int_arg
  end function int_arg

  real(8) function real_arg(i)
    integer, intent(in) :: i
    character(len=64) :: text
    call get_command_argument(i, text)
    read (text, *) real_arg
  end function real_arg

  subroutine fail(message)
    character(*), intent(in) :: message
    write (error_unit, '(a,i0,2a)') 'heat rank ', rank, ': ', message
    call MPI_Abort(MPI_COMM_WORLD, 1)
  end subroutine fail

  !> Two sine modes over the whole rod, cell centres at (g - 1/2) / (n ranks).
  subroutine initial(u)
    real(8), intent(out) :: u(0:)
    real(8), parameter :: TWO_PI = 8 * atan(1d0)
    real(8) :: s
    integer :: i
    u = 0
    do i = 1, n
      s = (rank * n + i - 0.5d0) / (n * ranks)
      u(i) = sin(TWO_PI * s) + 0.5d0 * sin(3 * TWO_PI * s)
    end do
  end subroutine initial

  !> The periodic neighbours' edge cells into u(0) and u(n+1).
  subroutine exchange_halos(u)
    real(8), intent(inout) :: u(0:)
    call MPI_Sendrecv(u(n), 1, MPI_DOUBLE_PRECISION, right, 0, u(0), 1, MPI_DOUBLE_PRECISION, &
                      left, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE)
    call MPI_Sendrecv(u(1), 1, MPI_DOUBLE_PRECISION, left, 1, u(n + 1), 1, &
                      MPI_DOUBLE_PRECISION, right, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE)
  end subroutine exchange_halos

  subroutine exact_kernel(u, new)
    real(8), intent(in) :: u(0:)
    real(8), intent(out) :: new(:)
    new = u(1:n) + R * (u(0:n - 1) - 2 * u(1:n) + u(2:n + 1))
  end subroutine exact_kernel

  !> A training sample: the stencil's inputs and the exact update of every cell.
  subroutine append_sample(target)
    real(8), intent(in) :: target(:)
    sample(:, 1) = u(0:n - 1)
    sample(:, 2) = u(1:n)
    sample(:, 3) = u(2:n + 1)
    sample(:, 4) = target
    call simai_append(store, 'heat/samples', sample, stat=stat)
    if (stat /= SIMAI_OK) call fail(simai_error_message())
    appended = appended + 1
  end subroutine append_sample

  !> next from the surrogate (the exact kernel when none answers), checked every check_every
  !> calls.
  subroutine surrogate_step(step)
    integer, intent(in) :: step
    real(8) :: error
    if (.not. ready) then                       ! the first surrogate step waits for a version
      call simai_surrogate_wait(model, timeout=60d0, stat=stat)
      ready = .true.
    end if
    x(:, 1) = real(u(0:n - 1), 4)
    x(:, 2) = real(u(1:n), 4)
    x(:, 3) = real(u(2:n + 1), 4)
    call simai_surrogate_run(model, x, y, version, stat)
    if (stat /= SIMAI_OK) then
      write (error_unit, '(a,i0,a,i0,2a)') 'heat rank ', rank, ' step ', step, ': ', &
        simai_torch_error_message()
      errors = errors + 1
      call exact_kernel(u, next)
      return
    end if
    calls = calls + 1
    if (nused == 0) then
      call record(version, step)
    else if (used(nused) /= version) then
      call record(version, step)
    end if
    next = real(y(:, 1), 8)
    if (mod(calls, check_every) /= 0) return
    call exact_kernel(u, exact)
    call append_sample(exact)                   ! the check's exact step is fresh data too
    error = norm2(next - exact) / max(norm2(exact - u(1:n)), tiny(1d0))
    checks = checks + 1
    if (error <= max_error) then
      passed = passed + 1
    else
      fallbacks = fallbacks + 1
      next = exact
    end if
  end subroutine surrogate_step

  !> Log a version the first step it answered.
  subroutine record(version, step)
    integer(8), intent(in) :: version
    integer, intent(in) :: step
    print '(a,i0,a,i0,a,i0)', 'heat rank ', rank, ' step ', step, ': model version ', version
    if (nused < MAX_VERSIONS) then
      nused = nused + 1
      used(nused) = version
    end if
  end subroutine record

  subroutine put_report()
    character(len=2048) :: text
    character(len=32) :: key
    integer :: i, at
    write (text, '(7(a,i0),a)') '{"language": "fortran", "rank": ', rank, ', "steps": ', steps, &
      ', "appended": ', appended, ', "surrogate_calls": ', calls, ', "checks": ', checks, &
      ', "passed": ', passed, ', "fallbacks": ', fallbacks, ', "versions": ['
    do i = 1, nused
      at = len_trim(text)
      write (text(at + 1:), '(a,i0)') trim(merge(', ', '  ', i > 1)), used(i)
    end do
    at = len_trim(text)
    write (text(at + 1:), '(a,i0,a)') '], "errors": ', errors, '}'
    write (key, '(a,i0)') 'heat/report/', rank
    call simai_put_json(store, trim(key), trim(text), stat=stat)
    if (stat /= SIMAI_OK) call fail(simai_error_message())
  end subroutine put_report

end program heat
