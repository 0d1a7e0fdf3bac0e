"""Fault scenarios against the real chain (real OpenBao, real Airflow scheduler, the real DAGs).

Starts a persistent (raft) OpenBao, a real Airflow (API server, scheduler, DAG processor,
triggerer; LocalExecutor; SQLite) and, where root may mount one, a 64 MiB tmpfs as the
package root; then injects one fault per scenario into live DAG runs and prints a
Markdown table (scenario, expected, observed, verdict, seconds) with date, machine and
command. The scenarios live in ``secure_data_testkit.faults``; tests/reliability/test_faults.py
runs the fast ones.

    python bench/reliability_scenarios.py                       # every scenario
    python bench/reliability_scenarios.py --only sigkill_anonymize disk_full
    python bench/reliability_scenarios.py --json out/reliability.json --keep out/reliability-lab

Exit status 1 if a scenario failed (a skipped one does not count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / ".cache" / "ultralytics"))

from secure_data_testkit import faults  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} CPUs{mem}, load {load:.2f} at start ({platform.system()} {platform.release()})"


def run_scenarios(lab: faults.FaultLab, only: list[str]) -> list[faults.Outcome]:
    """In an order that lets later scenarios reuse what earlier ones published (5 uses 1's package)."""
    outcomes: list[faults.Outcome] = []

    def attempt(name: str, fn, *args) -> faults.Outcome | None:
        if name not in only:
            return None
        lab.log(f"--- scenario {name}")
        started = time.monotonic()
        try:
            outcome = fn(lab, *args)
        except Exception as exc:  # a harness error is reported as a failed scenario, with its reason
            outcome = faults.Outcome(name, "-", f"harness error: {type(exc).__name__}: {exc}",
                                     round(time.monotonic() - started, 1), (f"{type(exc).__name__}: {exc}",),
                                     {"traceback": traceback.format_exc()})
        lab.log(f"    {outcome.verdict} in {outcome.seconds}s: {outcome.observed}")
        for failure in outcome.failures:
            lab.log(f"    FAILED: {failure}")
        outcomes.append(outcome)
        return outcome

    first = attempt("vault_restart", faults.scenario_vault_restart)
    attempt("vault_sealed", faults.scenario_vault_sealed)
    if "corrupted_package" in only:
        package = (first.evidence if first and first.evidence.get("package_uri") else {})
        if not package:  # scenario 1 not run (or failed): publish a package with a plain run
            source = lab.dataset("for-corruption")
            run_id = lab.trigger(source)
            lab.wait_run(run_id)
            package = lab.package_of(run_id)
        attempt("corrupted_package", faults.scenario_corrupted_package, package["package_uri"], package["package_id"])
    attempt("token_revoked", faults.scenario_token_revoked)
    attempt("credentials_revoked", faults.scenario_credentials_revoked)
    attempt("sigkill_anonymize", faults.scenario_sigkill_anonymize)
    attempt("disk_full", faults.scenario_disk_full)
    attempt("same_source_concurrent", faults.scenario_same_source_concurrent)
    attempt("load", faults.scenario_load)
    return outcomes


def markdown(outcomes: list[faults.Outcome], *, started: datetime, command: str, total_s: float) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        f"date: {started.strftime('%Y-%m-%d %H:%M UTC')}  ",
        f"machine: {machine()}  ",
        f"command: `{command}`  ",
        f"total: {total_s:.0f} s (including start-up of OpenBao and Airflow)",
        "",
        "| scenario | expected | observed | verdict | seconds |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for o in outcomes:
        observed = o.skipped or o.observed
        if o.failures:
            observed += " **Broken:** " + "; ".join(o.failures)
        lines.append(f"| {cell(o.scenario)} | {cell(o.expected)} | {cell(observed)} | {o.verdict} | {o.seconds:.0f} |")
    return "\n".join(lines)


def _order(scenario: str) -> tuple[int, str]:
    """Table order: by scenario number ("1.", "1b.", "2.", ...), whatever order they ran in."""
    head = scenario.split(".", 1)[0]
    digits = "".join(ch for ch in head if ch.isdigit())
    return (int(digits) if digits else 99, head)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=faults.ALL_SCENARIOS, default=list(faults.ALL_SCENARIOS))
    parser.add_argument("--json", type=Path, help="also write every outcome with its evidence here")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    command = "python bench/reliability_scenarios.py" + (
        " " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])) if (
            argv if argv is not None else sys.argv[1:]) else "")

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="secure-data-faults-"))
    started, t0 = datetime.now(UTC), time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    # Airflow's in-process logging (structlog) writes to fd 1: keep stdout for the table alone.
    table_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        with faults.FaultLab(workdir=workdir, log=log) as lab:
            outcomes = run_scenarios(lab, args.only)
    finally:
        sys.stdout.flush()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    outcomes.sort(key=lambda o: _order(o.scenario))
    table = markdown(outcomes, started=started, command=command, total_s=time.monotonic() - t0)
    print(table, file=table_out, flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{
            "scenario": o.scenario, "expected": o.expected, "observed": o.observed, "verdict": o.verdict,
            "seconds": o.seconds, "failures": list(o.failures), "skipped": o.skipped, "evidence": o.evidence,
        } for o in outcomes], indent=2, default=str) + "\n")
    return 1 if any(o.failures for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
