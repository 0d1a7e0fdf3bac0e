"""What the benchmark scripts print about the machine they ran on (shared by the scripts in bench/)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_header(title: str, script: str, argv: list[str]) -> None:
    """Title, UTC date, machine (CPUs, model, load) and the command, as every bench result starts."""
    import datetime
    import os

    load = os.getloadavg()
    print(f"# {title}")
    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | "
          f"{cpu_name()} | load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | python {platform.python_version()}")
    print(f"command: python {script} {' '.join(argv)}".rstrip())
