"""Stop signals (SIGINT, SIGTERM) belong to the main thread.

The kernel may deliver a process-directed signal to any thread that does not block it, but
Python runs signal handlers, and interrupts a blocking call such as `time.sleep` or
`Future.result`, only in the main thread: a SIGTERM that lands on a background thread would
go unnoticed until the main thread wakes by itself. So simai's background threads block the
stop signals, and the processes they start unblock them again.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def leave_stop_signals_to_main_thread() -> None:
    """Call first thing in a background thread."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def unblock_stop_signals() -> None:
    """Call in a child process (preexec_fn) started from a background thread."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
