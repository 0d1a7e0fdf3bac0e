"""Run Airflow for real: API server, scheduler, DAG processor and triggerer (LocalExecutor, SQLite).

Used by `make demo` and the end-to-end tests. Every process is started in its
own session and stopped (whole process group) on exit, also on failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secure_data_testkit.airflow_env import airflow_env, migrate_db
from secure_data_testkit.openbao import free_port

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL = {"success", "failed"}


class AirflowStackError(RuntimeError):
    pass


@dataclass
class AirflowStack:
    home: Path
    dags_folder: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    parallelism: int = 8
    drop_env_prefixes: tuple[str, ...] = ()  # variables of this process the components must not inherit
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        extra = {
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
            **self.extra_env,
        }
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(self.drop_env_prefixes or ("\0",))}
        return {**inherited, **airflow_env(self.home, dags_folder=self.dags_folder, extra=extra)}

    def start(self, timeout: float = 120.0) -> AirflowStack:
        self.home = Path(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        env = self.env()
        migrate_db(env)
        airflow = str(Path(sys.executable).parent / "airflow")
        for name in COMPONENTS:
            log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
            args = [airflow, name] + (["--port", str(self.port)] if name == "api-server" else [])
            self._procs[name] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True, cwd=self.home)
            log.close()
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    tail = (self.home / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise AirflowStackError(f"airflow {name} exited with {proc.returncode}:\n{tail}")
            try:
                health = self.api("GET", "/api/v2/monitor/health")
                last = health
                if all(health.get(k, {}).get("status") == "healthy"
                       for k in ("metadatabase", "scheduler", "dag_processor", "triggerer")):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = exc
            time.sleep(1)
        raise AirflowStackError(f"Airflow at {self.url} not healthy within {timeout}s: {last}")

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback)
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise AirflowStackError(f"{method} {path} -> HTTP {exc.code}: {detail}") from exc
        return json.loads(raw) if raw else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        """Wait until the DAG processor has parsed ``dag_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/api/v2/dags/{dag_id}")
                return
            except AirflowStackError:
                time.sleep(1)
        errors = self.api("GET", "/api/v2/importErrors")
        raise AirflowStackError(f"DAG {dag_id} not parsed within {timeout}s; import errors: {errors}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        quoted = urllib.request.quote(run_id, safe="")
        while time.monotonic() < deadline:
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")
            if run["state"] in TERMINAL:
                return run
            time.sleep(2)
        raise AirflowStackError(f"run {dag_id}/{run_id} not finished within {timeout}s")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after")["dag_runs"]

    def wait_for_new_run(self, dag_id: str, after: str, timeout: float = 600.0) -> dict[str, Any]:
        """Wait for a run of ``dag_id`` queued after ISO time ``after`` (e.g. Asset-triggered) to finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fresh = [r for r in self.runs(dag_id) if (r.get("queued_at") or r["run_after"]) >= after]
            if fresh:
                return self.wait_for_run(dag_id, fresh[0]["dag_run_id"], max(1.0, deadline - time.monotonic()))
            time.sleep(2)
        raise AirflowStackError(f"no run of {dag_id} after {after} within {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        quoted = urllib.request.quote(run_id, safe="")
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        quoted = urllib.request.quote(run_id, safe="")
        entry = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}"
                         f"/xcomEntries/{key}?map_index={map_index}&deserialize=true")
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task log of one try as text (one JSON object per structured log line)."""
        quoted = urllib.request.quote(run_id, safe="")
        resp = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/logs/{try_number}"
                        f"?full_content=true&map_index={map_index}")
        content = resp.get("content") or []
        return "\n".join(item if isinstance(item, str) else json.dumps(item) for item in content)

    def asset_events(self, **filters: str) -> list[dict[str, Any]]:
        """Asset events, newest first, e.g. ``asset_events(source_dag_id=..., source_run_id=...)``."""
        query = "&".join(f"{k}={urllib.request.quote(str(v), safe='')}" for k, v in filters.items())
        return self.api("GET", f"/api/v2/assets/events?order_by=-timestamp&limit=100&{query}")["asset_events"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def clear_task(self, dag_id: str, run_id: str, task_ids: list[str], *, downstream: bool = True) -> None:
        """Clear task instances of one run (as the UI's "Clear" does): they run again."""
        self.api("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances",
                 {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": False,
                  "include_downstream": downstream, "reset_dag_runs": True})

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._procs.clear()

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
