"""The deployment policy at execute time: every task that uses it re-reads it on its own worker.

Trigger-time validation (the DAG's Param schemas, built from the policy the DAG processor
reads) is a convenience for people; a triggerer can bypass the form through the REST API
and the DAG processor's copy may differ from the workers'. So each task that acts on the
policy re-reads the worker's policy and refuses a weaker request itself:

- :class:`PolicyCheckOperator` first in the run: fails fast with a readable message;
- :class:`PolicyAnonymizeOperator` / :class:`PolicyAnonymizeMergeOperator`: the anonymize
  options are the policy's, tightened by the run's request; nothing else reaches the stage;
- :class:`PolicyPoisoningOperator`: the optional backbone check loads only the policy's model;
- :func:`package_policy`: the effective policy the hand-off signs into the package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from secure_data.lineage.mixin import OpenLineageMixin
from secure_data.operators.anonymize import OPTION_FIELDS, AnonymizeMergeOperator, AnonymizeOperator
from secure_data.operators.base import as_mapping
from secure_data.operators.poisoning import PoisoningOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


def enforced_options(request: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(anonymize options, effective policy document) for a run's request, on this worker's policy.

    Raises ``AirflowFailException`` (no retry: a retry cannot make a weaker request acceptable)
    with the policy's readable message.
    """
    from dataclasses import fields

    from airflow.sdk.exceptions import AirflowFailException

    from secure_data.anonymize.config import AnonymizeConfig
    from secure_data.policy import PolicyError, PolicyViolation, effective_anonymize_options, load_policy
    from secure_data.policy.model import effective_document

    try:
        policy = load_policy().require_models()
        options = effective_anonymize_options(policy, as_mapping(request, "policy_request"))
    except (PolicyError, PolicyViolation) as exc:
        raise AirflowFailException(str(exc)) from None
    supported = {f.name for f in fields(AnonymizeConfig)}
    unsupported = [k for k, v in options.items() if k not in supported and v not in (None, [], ())]
    if unsupported:
        raise AirflowFailException(
            f"the deployment policy {policy.digest} sets {unsupported}, which this anonymize stage does not "
            "support: refusing to run with less protection than the policy asks for")
    options = {k: v for k, v in options.items() if k in supported}
    return options, effective_document(policy, options)


class PolicyCheckOperator(OpenLineageMixin, BaseOperator):
    """First task of a run: the run's request checked against this worker's deployment policy.

    Returns ``{"policy_digest", "policy_source", "effective_digest", "effective"}`` (non-secret).
    """

    template_fields: Sequence[str] = ("policy_request",)
    template_fields_renderers = {"policy_request": "json"}
    ui_color = "#fff4e5"

    def __init__(self, *, policy_request: Mapping[str, Any] | str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.policy_request = policy_request

    def execute(self, context: Context) -> dict[str, Any]:
        from secure_data.policy import load_policy
        from secure_data.policy.model import digest_of

        options, effective = enforced_options(self.policy_request)
        policy = load_policy()
        self.log.info("Deployment policy %s (%s): detectors %s, verifiers %s, classes %s, conf <= %s, "
                      "verify_conf <= %s, passes >= %s; effective %s", policy.digest, policy.source,
                      [d.get("name") or d.get("kind") for d in policy.detectors],
                      [d.get("name") or d.get("kind") for d in policy.verifiers], list(options["classes"]),
                      policy.conf, policy.verify_conf, policy.max_passes, digest_of(effective))
        return self.lineage_result({"policy_digest": policy.digest, "policy_source": policy.source,
                                    "effective_digest": digest_of(effective), "effective": effective})


class _PolicyAnonymize:
    """Mixin: replace whatever options the operator was given by the enforced ones, then run it."""

    policy_request: Any
    check_options_at_parse = False  # the options come from the worker's deployment policy

    def execute(self, context: Context) -> dict[str, Any]:
        options, _ = enforced_options(self.policy_request)
        self.config = options
        for name in OPTION_FIELDS:  # argument overrides would bypass the policy
            setattr(self, name, None)
        return super().execute(context)  # type: ignore[misc]


class PolicyAnonymizeOperator(_PolicyAnonymize, AnonymizeOperator):
    """:class:`AnonymizeOperator` whose options are the deployment policy tightened by ``policy_request``."""

    template_fields: Sequence[str] = (*AnonymizeOperator.template_fields, "policy_request")

    def __init__(self, *, policy_request: Mapping[str, Any] | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy_request = policy_request


class PolicyAnonymizeMergeOperator(_PolicyAnonymize, AnonymizeMergeOperator):
    """:class:`AnonymizeMergeOperator` checked against the same enforced options as the shards."""

    template_fields: Sequence[str] = (*AnonymizeMergeOperator.template_fields, "policy_request")

    def __init__(self, *, policy_request: Mapping[str, Any] | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy_request = policy_request


class PolicyPoisoningOperator(PoisoningOperator):
    """:class:`PoisoningOperator` whose optional backbone model is the deployment policy's, never a param's."""

    template_fields: Sequence[str] = (*PoisoningOperator.template_fields, "backbone_check")

    def __init__(self, *, backbone_check: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone_check = backbone_check

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from secure_data.policy import load_policy

        config = dict(self.config or {})
        chosen = sorted({"backbone_model", "backbone_model_sha256"} & {k for k, v in config.items() if v})
        if chosen:
            raise AirflowFailException(f"{chosen}: the backbone model comes from the deployment policy only")
        if str(self.backbone_check).strip().lower() in ("true", "1", "yes", "on"):
            model = load_policy().backbone()
            if model is None:
                raise AirflowFailException("backbone_check: the deployment policy has no Ultralytics .pt detector "
                                           "to use as the backbone")
            config["backbone_model"], config["backbone_model_sha256"] = model["model_path"], model["model_sha256"]
        self.config = config
        return super().execute(context)


def package_policy(request: Any) -> dict[str, Any]:
    """The effective policy document the hand-off signs into the package (re-checked on its worker)."""
    return enforced_options(request)[1]
