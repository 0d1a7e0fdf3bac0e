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


def package_root() -> Path:
    """Where hand-off packages are published (``SECURE_DATA_PACKAGE_ROOT``, else ``<output root>/packages``)."""
    configured = os.environ.get("SECURE_DATA_PACKAGE_ROOT")
    return Path(configured) if configured else output_root() / "packages"


def report_url(dag_id: str, run_id: str) -> str:
    """Path of a run's report as served by the plugin's FastAPI app (relative to the API server root)."""
    from urllib.parse import quote

    return f"/secure-data/reports/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/"
