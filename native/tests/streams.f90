! streams_fortran: consumer groups and stream declarations through the Fortran module, for
! tests/test_native_streams.py.
!
!   streams_fortran URL read STREAM GROUP KIND   read as group GROUP until the stream ends,
!                                                 KIND f8: real(8) a(2, 3), i4: integer(4) a(6);
!                                                 "entry: INDEX" and the values in Python's
!                                                 (row-major) order
!   streams_fortran URL admin STREAM              create/close/delete, a wrong-typed read
program streams_fortran
  use simai
  implicit none
  type(simai_store) :: store
  character(len=256) :: url, cmd, stream, group, kind
  real(8) :: a(2, 3)
  real(4) :: wrong(2, 3)
  integer(4) :: b(6)
  integer(8) :: index
  integer :: stat, r
  logical :: existed

  call get_command_argument(1, url)
  call get_command_argument(2, cmd)
  call get_command_argument(3, stream)
  call simai_open(store, trim(url), stat)
  if (stat /= SIMAI_OK) then
    print '(a)', 'open: ' // simai_error_message()
    stop 1
  end if

  select case (trim(cmd))
  case ('read')
    call get_command_argument(4, group)
    call get_command_argument(5, kind)
    call simai_group_position(store, stream, group, index, stat)
    do
      if (trim(kind) == 'f8') then
        call simai_group_get(store, stream, group, index, a, stat, timeout=30d0)
      else
        call simai_group_get(store, stream, group, index, b, stat, timeout=30d0)
      end if
      if (stat /= SIMAI_OK) exit
      if (trim(kind) == 'f8') then
        print '(a,i0,6(1x,i0))', 'entry: ', index, (nint(a(r, :)), r = 1, 2)
      else
        print '(a,i0,6(1x,i0))', 'entry: ', index, b
      end if
      index = index + 1
    end do
    print '(a,i0,1x,a)', 'end: ', stat, simai_error_message()
  case ('admin')
    call simai_stream_create(store, stream, maxlen=2, policy='block', stat=stat)
    print '(a,i0)', 'create: ', stat
    call simai_stream_create(store, stream, maxlen=2, policy='block', stat=stat)
    print '(a,i0)', 'same: ', stat
    call simai_stream_create(store, stream, maxlen=5, stat=stat)
    print '(a,i0)', 'other: ', stat
    call simai_stream_create(store, stream, maxlen=2, policy='never', stat=stat)
    print '(a,i0)', 'policy: ', stat
    call simai_stream_create(store, stream, maxlen=-1, stat=stat)
    print '(a,i0)', 'negative: ', stat
    a = reshape([1d0, 2d0, 3d0, 4d0, 5d0, 6d0], [2, 3])
    call simai_append(store, stream, a, stat)
    index = 0
    call simai_group_get(store, stream, 'g', index, wrong, stat, timeout=1d0)
    print '(a,i0)', 'type: ', stat
    call simai_group_get(store, stream, 'g', index, a, stat, timeout=1d0)
    print '(a,i0,1x,i0,6(1x,i0))', 'typed: ', stat, index, (nint(a(r, :)), r = 1, 2)
    call simai_stream_close(store, stream, stat)
    print '(a,i0)', 'close: ', stat
    index = index + 1
    call simai_group_get(store, stream, 'g', index, a, stat, timeout=1d0)
    print '(a,i0)', 'ended: ', stat
    call simai_stream_delete(store, stream, existed, stat)
    print '(a,i0,1x,l1)', 'delete: ', stat, existed
    call simai_stream_delete(store, stream, existed, stat)
    print '(a,i0,1x,l1)', 'again: ', stat, existed
  end select
  call simai_close(store)
end program streams_fortran
