"""The deployment policy (models and pins, protected classes, floors, verifiers, residual policy)."""

from secure_data.policy.model import (
    POLICY_FILE_ENV,
    DeploymentPolicy,
    PolicyError,
    PolicyViolation,
    effective_anonymize_options,
    effective_document,
    load_policy,
)

__all__ = ["POLICY_FILE_ENV", "DeploymentPolicy", "PolicyError", "PolicyViolation", "effective_anonymize_options",
           "effective_document", "load_policy"]
