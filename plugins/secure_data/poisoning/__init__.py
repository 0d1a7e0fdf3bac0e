"""Poisoning screen for object-detection datasets: duplicates with conflicting labels, split leakage,
box outliers and misfits, trigger patches, distribution drift. No Airflow imports; heavy libraries
(numpy, cv2, scipy, great_expectations) are imported inside the functions that need them.
"""

from __future__ import annotations

from secure_data.poisoning.config import ACTIONS, CHECKS, PoisoningConfig
from secure_data.poisoning.stage import (
    FINDINGS_NAME,
    MANIFEST_NAME,
    STAGE,
    PoisoningCheckFailed,
    run_poisoning,
)

__all__ = [
    "ACTIONS",
    "CHECKS",
    "FINDINGS_NAME",
    "MANIFEST_NAME",
    "STAGE",
    "PoisoningCheckFailed",
    "PoisoningConfig",
    "run_poisoning",
]
