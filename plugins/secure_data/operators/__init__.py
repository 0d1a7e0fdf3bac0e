"""The public secure-data operators (thin Airflow shells over the core packages).

``from secure_data.operators import IntegrityOperator, PoisoningOperator, ...``: every operator a DAG
author uses, with its full typed signature and docstring. They share :class:`StageOperator`
(``operators.base``): run layout, XCom conversion, templated policy overrides, one failure behaviour.
"""

from __future__ import annotations

from secure_data.operators.anonymize import AnonymizeMergeOperator, AnonymizeOperator
from secure_data.operators.base import StageOperator
from secure_data.operators.consumer import PackageConsumerOperator, package_consumer
from secure_data.operators.handoff import PackageOperator
from secure_data.operators.integrity import IntegrityMergeOperator, IntegrityOperator, IntegrityShardOperator
from secure_data.operators.poisoning import PoisoningOperator
from secure_data.operators.policy import (
    PolicyAnonymizeMergeOperator,
    PolicyAnonymizeOperator,
    PolicyCheckOperator,
    PolicyPoisoningOperator,
)
from secure_data.operators.preflight import VaultPreflightOperator
from secure_data.operators.report import SanitizationReportOperator

__all__ = [
    "AnonymizeMergeOperator",
    "AnonymizeOperator",
    "IntegrityMergeOperator",
    "IntegrityOperator",
    "IntegrityShardOperator",
    "PackageConsumerOperator",
    "PackageOperator",
    "PoisoningOperator",
    "PolicyAnonymizeMergeOperator",
    "PolicyAnonymizeOperator",
    "PolicyCheckOperator",
    "PolicyPoisoningOperator",
    "SanitizationReportOperator",
    "StageOperator",
    "VaultPreflightOperator",
    "package_consumer",
]
