"""Anonymization: detect protected objects (Ultralytics YOLO, CenterFace), obfuscate, verify, audit.

Core package: no Airflow imports, and no heavy import (torch, ultralytics, cv2) at
module level, so importing it at DAG-parse time costs nothing.

Entry points: :func:`run_anonymize_shard` (one shard, resumable) and
:func:`merge_anonymize` (stage manifest + audit + complete YOLO dataset).
"""

from __future__ import annotations

from secure_data.anonymize.config import AnonymizeConfig, DetectorSpec
from secure_data.anonymize.merge import merge_anonymize, merge_shards
from secure_data.anonymize.modelfile import ModelIntegrityError
from secure_data.anonymize.shard import STAGE, run_anonymize_shard, shard_of

__all__ = [
    "STAGE",
    "AnonymizeConfig",
    "DetectorSpec",
    "ModelIntegrityError",
    "merge_anonymize",
    "merge_shards",
    "run_anonymize_shard",
    "shard_of",
]
