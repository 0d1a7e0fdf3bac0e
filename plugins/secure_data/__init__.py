"""secure-data: sanitized, encrypted, signed image datasets for Airflow 3.

This package is imported at DAG-parse time: keep it free of heavy imports.
"""

from __future__ import annotations

__version__ = "0.1.0"
