"""Parse time of each DAG file, and which heavy libraries parsing imports (goal: < 0.5 s, none).

Each file is parsed in a fresh interpreter (Airflow already imported, as in the DAG processor),
best of N runs; the peer is an empty DAG file with one task, parsed the same way.

    .venv/bin/python bench/dag_parse_time.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "ultralytics", "great_expectations", "cv2", "onnxruntime", "pandas", "numpy")
PEER = '''
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("peer_empty", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
    EmptyOperator(task_id="t")
'''

PROBE = r'''
import sys, time, json
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
dt = time.perf_counter() - t
print("RESULT=" + json.dumps({"seconds": dt, "dags": sorted(bag.dag_ids), "errors": list(bag.import_errors),
                             "heavy": [m for m in %r if m in sys.modules]}))
'''.replace("%r", repr(HEAVY))


def parse(path: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT="))
    return json.loads(line[len("RESULT="):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "plugins"))
    from secure_data_testkit.airflow_env import airflow_env

    home = Path(tempfile.mkdtemp(prefix="parse-bench-"))
    env = {**os.environ, **airflow_env(home)}
    peer = home / "peer_empty.py"
    peer.write_text(PEER)
    files = sorted((REPO / "dags").glob("*.py")) + [peer]
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}; command: {' '.join(sys.argv)}")
    print("| DAG file | DAGs | best parse (s) | median (s) | heavy modules imported |")
    print("| --- | --- | --- | --- | --- |")
    for path in files:
        runs = [parse(path, env) for _ in range(args.repeat)]
        times = sorted(r["seconds"] for r in runs)
        assert not runs[0]["errors"], runs[0]["errors"]
        name = "peer: empty DAG, one EmptyOperator" if path == peer else f"dags/{path.name}"
        print(f"| {name} | {', '.join(runs[0]['dags'])} | {times[0]:.3f} | {times[len(times) // 2]:.3f} | "
              f"{', '.join(runs[0]['heavy']) or 'none'} |")


if __name__ == "__main__":
    main()
