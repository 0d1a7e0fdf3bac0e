"""Deployment settings read from the environment (cheap; safe at DAG-parse time)."""

from __future__ import annotations

import os
from pathlib import Path


def output_root() -> Path:
    """Where run-scoped folders (manifests, quarantine, outputs, reports) are written.

    ``SECURE_DATA_OUTPUT_ROOT``, else ``$AIRFLOW_HOME/secure-data``.
    """
    configured = os.environ.get("SECURE_DATA_OUTPUT_ROOT")
    if configured:
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", str(Path.home() / "airflow"))) / "secure-data"


def package_root() -> str:
    """Where hand-off packages are published (``SECURE_DATA_PACKAGE_ROOT``, else ``<output root>/packages``):
    a local directory or an object-storage URI (``s3://bucket/packages``), returned as given."""
    configured = os.environ.get("SECURE_DATA_PACKAGE_ROOT")
    return configured if configured else str(output_root() / "packages")


def package_storage_secret() -> str | None:
    """KV v2 path of the sanitizer's credentials for an object-storage package root
    (``SECURE_DATA_PACKAGE_STORAGE_SECRET``; unset for a local directory)."""
    return os.environ.get("SECURE_DATA_PACKAGE_STORAGE_SECRET") or None


def trainer_storage_secret() -> str | None:
    """KV v2 path of the trainer's credentials for packages on object storage
    (``SECURE_DATA_TRAINER_STORAGE_SECRET``; unset for local packages)."""
    return os.environ.get("SECURE_DATA_TRAINER_STORAGE_SECRET") or None


def report_url(dag_id: str, run_id: str) -> str:
    """Path of a run's report as served by the plugin's FastAPI app (relative to the API server root)."""
    from urllib.parse import quote

    return f"/secure-data/reports/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/"


def gpu_queue() -> str:
    """Executor queue of the anonymization (GPU) tasks: ``SECURE_DATA_GPU_QUEUE``, else Airflow's
    ``[operators] default_queue`` ("default"). Celery GPU workers listen on it (``--queues gpu``)."""
    return os.environ.get("SECURE_DATA_GPU_QUEUE") or os.environ.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE") or "default"


def sanitize_queue() -> str:
    """Executor queue of the sanitization tasks that hold the sanitizer identity (preflight, integrity,
    hand-off...): ``SECURE_DATA_SANITIZE_QUEUE``, else Airflow's default queue. On CeleryExecutor only
    the sanitize worker (the one with the sanitizer's credentials) listens on it."""
    return (os.environ.get("SECURE_DATA_SANITIZE_QUEUE") or os.environ.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE")
            or "default")


def train_queue() -> str:
    """Executor queue of the training task (``SECURE_DATA_TRAIN_QUEUE``, else the default queue): only the
    trainer worker, the one with the trainer's credentials, listens on it."""
    return (os.environ.get("SECURE_DATA_TRAIN_QUEUE") or os.environ.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE")
            or "default")


def gpu_pool() -> str:
    """Pool of the anonymization tasks (``SECURE_DATA_GPU_POOL``, else ``default_pool``): size it to the
    number of GPUs so shards never oversubscribe them."""
    return os.environ.get("SECURE_DATA_GPU_POOL") or "default_pool"


# DAG-level access control (enforced by auth managers that support it, e.g. the FAB auth manager).
_RUNNER = {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}
_READER = {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}


def access_control(runner_role_env: str) -> dict[str, dict[str, set[str]]] | None:
    """``access_control`` for a DAG: the role named by ``runner_role_env`` may trigger it and read its
    runs; ``SECURE_DATA_VIEWER_ROLE`` may only read runs (and so the run reports, which the plugin
    serves to whoever may read the DAG's runs). ``None`` (no DAG-level grants) when neither is set.

    ``SECURE_DATA_SANITIZER_ROLE`` for the sanitization DAG, ``SECURE_DATA_TRAINER_ROLE`` for the
    training DAG; see docs/access-control.md.
    """
    grants: dict[str, dict[str, set[str]]] = {}
    viewer = os.environ.get("SECURE_DATA_VIEWER_ROLE", "").strip()
    runner = os.environ.get(runner_role_env, "").strip()
    if viewer:
        grants[viewer] = {k: set(v) for k, v in _READER.items()}
    if runner:
        grants[runner] = {k: set(v) for k, v in _RUNNER.items()}
    return grants or None
