"""A lock of the operating system, even under gevent's monkey patching."""

from __future__ import annotations

import threading
from typing import Any


def os_lock() -> Any:
    """An OS lock for state shared with OS threads (the gRPC thread sender) and held only where
    nothing can yield: cheaper than gevent's patched lock, and it never switches greenlets."""
    try:
        from gevent.monkey import get_original

        return get_original("threading", "Lock")()
    except ImportError:  # no gevent installed: threading is the OS's
        return threading.Lock()
