"""Pillow's warnings and debug logs, collected per thread instead of written to the task log.

A hostile EXIF block (thousands of IFD entries pointing past the end of the file) makes Pillow's
TIFF/EXIF parser call ``warnings.warn`` once per entry, each with a distinct message, so Python's
default filter prints every one: thousands of task-log lines per image and per read. Inspecting
code wants one finding instead.

``warnings.catch_warnings`` would hide them, but it swaps process-global state and is not
thread-safe (the integrity stage inspects images in a thread pool: two overlapping windows restore
each other's state in the wrong order, and warnings are lost or leak for the rest of the process).
Here a reference-counted window installs one filter and one ``showwarning`` hook for the process
while any thread collects; each collecting thread gets its own list; a warning raised by a thread
that is not collecting is passed on to the hook that was there before, unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# Matched (re.match) against the module a warning is attributed to: Pillow and its plugins.
_PILLOW_MODULES = r"PIL(\.|$)"
# Pillow's TIFF plugin logs every IFD tag (with its value) at DEBUG: 5000 lines for the hostile case.
_PILLOW_LOGGER = "PIL"

_lock = threading.Lock()
_users = 0
_installed_filter: tuple[Any, ...] | None = None
_forward: Callable[..., Any] | None = None
_saved_level: int | None = None
_local = threading.local()


@dataclass(frozen=True)
class CollectedWarning:
    category: str
    message: str
    source: str  # file name of the code that warned, e.g. "TiffImagePlugin.py"


def _route(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
           line: str | None = None) -> None:
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(CollectedWarning(category.__name__, str(message), os.path.basename(filename)))
        return
    forward = _forward or warnings._showwarning_orig  # type: ignore[attr-defined]
    forward(message, category, filename, lineno, file, line)


def _open_window() -> None:
    global _users, _installed_filter, _forward, _saved_level
    with _lock:
        if _users == 0:
            # "always": every warning reaches the hook, so what is collected does not depend on what
            # this process happened to warn about before (Python's registry would skip repeats).
            warnings.filterwarnings("always", module=_PILLOW_MODULES)
            _installed_filter = warnings.filters[0]
            _forward = warnings.showwarning
            warnings.showwarning = _route
            logger = logging.getLogger(_PILLOW_LOGGER)
            _saved_level = logger.level
            if logger.level == logging.NOTSET:  # an explicit level set by an operator is left alone
                logger.setLevel(logging.INFO)
        _users += 1


def _close_window() -> None:
    global _users
    with _lock:
        _users -= 1
        if _users:
            return
        with contextlib.suppress(ValueError):
            warnings.filters.remove(_installed_filter)
        mutated = getattr(warnings, "_filters_mutated", None)  # invalidates the C module's filter cache
        if mutated is not None:
            mutated()
        if warnings.showwarning is _route:
            # Otherwise someone replaced the hook meanwhile (and will restore ours later): _route
            # then keeps forwarding to the previous hook, so nothing is lost.
            warnings.showwarning = _forward  # type: ignore[assignment]
        logger = logging.getLogger(_PILLOW_LOGGER)
        if _saved_level is not None and logger.level == logging.INFO:
            logger.setLevel(_saved_level)


@contextlib.contextmanager
def collect_pillow_warnings() -> Iterator[list[CollectedWarning]]:
    """Collect every warning raised in this thread inside the block (Pillow's, mostly) into a list.

    Nothing is printed for them; the caller turns them into a finding or a meta flag. Warnings of
    other threads are unaffected. Pillow's DEBUG logs are held at INFO while any thread collects.
    """
    _open_window()
    previous = getattr(_local, "sink", None)
    sink: list[CollectedWarning] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = previous
        _close_window()
