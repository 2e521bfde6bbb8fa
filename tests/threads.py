"""Another thread holding a lock, as a day's settlement holds the chain for minutes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def held_elsewhere(lock: Any, while_held: Callable[[], None] = lambda: None) -> Iterator[None]:
    """``lock`` taken by another thread (which then runs ``while_held``) for the ``with`` block."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            while_held()
            taken.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        if not taken.wait(30):
            raise TimeoutError("the other thread never took the lock")
        yield
    finally:
        release.set()
        worker.join()
