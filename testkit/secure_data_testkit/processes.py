"""Child Python processes for kill-and-resume tests: an environment that imports this repository, and
a SIGKILL delivered at a chosen moment of the child's work (a real kill, not an exception)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

from secure_data_testkit.airflow_env import REPO_ROOT


def python_env() -> dict[str, str]:
    """``os.environ`` with the repository's ``plugins/`` first on ``PYTHONPATH`` (for ``python -c`` children)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT / "testkit"),
                                                      os.environ.get("PYTHONPATH", "")])}


def sigkill_when(child: subprocess.Popen, ready: Callable[[], bool], *, what: str, timeout: float = 120.0,
                 poll: float = 0.05) -> None:
    """Wait until ``ready()`` while ``child`` runs, then SIGKILL it and check that the kill is what ended it.

    Fails (with the tail of the child's stderr) when the child ended first or ``what`` never happened
    within ``timeout``. The child is killed and reaped in every case.
    """
    try:
        deadline = time.monotonic() + timeout
        while not ready() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(poll)
        if child.poll() is not None or not ready():
            ended = child.poll() is not None
            child.kill()
            child.wait()
            tail = child.stderr.read().decode("utf-8", "replace")[-2000:] if child.stderr else ""
            problem = "child ended before it could be killed" if ended else f"{what} never happened"
            raise AssertionError(f"{problem}: {tail}")
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
