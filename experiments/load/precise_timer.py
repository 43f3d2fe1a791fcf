"""Waiting until an exact moment inside gevent without burning CPU.

gevent's ``sleep`` rides on the event loop's millisecond-granular poll timeout and wakes about
0.4-1 ms late on our machines; an open loop that sends on such a timer measures its own
lateness. A Linux ``timerfd`` armed with an absolute ``CLOCK_MONOTONIC`` deadline makes the
kernel wake the loop's epoll at the deadline itself (tens of microseconds late), while other
greenlets keep running. Where timerfd is missing (not Linux) it falls back to ``gevent.sleep``.
"""

from __future__ import annotations

import ctypes
import os
import time

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class PreciseTimer:
    """One greenlet's timer; ``wait_until(t)`` returns at ``time.monotonic() >= t``."""

    def __init__(self) -> None:
        self._fd = -1
        self._libc = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        except (OSError, AttributeError):
            fd = -1
        if fd >= 0:
            self._fd, self._libc = fd, libc

    @property
    def kind(self) -> str:
        return "timerfd" if self._fd >= 0 else "gevent.sleep"

    def wait_until(self, deadline: float) -> None:
        import gevent
        from gevent.socket import wait_read

        if self._fd < 0:
            delay = deadline - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            return
        spec = _Itimerspec()
        seconds = int(deadline)
        spec.it_value.tv_sec = seconds
        spec.it_value.tv_nsec = max(int((deadline - seconds) * 1e9), 1)
        assert self._libc is not None  # set with the timer's fd, which is open here
        while time.monotonic() < deadline:
            if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")
            wait_read(self._fd)
            try:
                os.read(self._fd, 8)
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
