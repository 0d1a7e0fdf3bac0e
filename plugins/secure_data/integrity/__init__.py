"""Integrity stage: file / image / label checks, tamper diff, Great Expectations gate, quarantine.

Entry point: :func:`secure_data.integrity.run.run_integrity` with an
:class:`secure_data.integrity.config.IntegrityConfig`. No Airflow imports here; heavy
libraries (Pillow, Great Expectations, pandas) are imported inside the functions that need them.
"""

from __future__ import annotations

from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import DatasetError, IntegrityFailed, run_integrity

__all__ = ["DatasetError", "IntegrityConfig", "IntegrityFailed", "run_integrity"]
