"""Turn-taking between the model's multi-threaded forward pass and the codec threads, on the CPU.

PyTorch runs a forward pass on an OpenMP team of one thread per core; every layer ends
in a barrier. When our JPEG decode/encode threads run at the same time, the OS
preempts team members, each barrier waits for the slowest one and the forward pass
slows down several times over. So on the CPU the forward pass takes the cores
exclusively and the codec work (short units: one image each) fills the gaps between
forward passes, with all cores. On a GPU the forward pass does not use the CPU
cores that way and the gate is off.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class CpuTurns:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # exclusive requests: they go first, or the forward pass would starve

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Codec work: many at once, never during a forward pass."""
        if not self.enabled:
            yield
            return
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """A forward pass: waits for running codec units (one image each) to finish, then runs alone."""
        if not self.enabled:
            yield
            return
        with self._cond:
            self._waiting += 1
            while self._shared or self._exclusive:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
