"""A triggerer cannot weaken the deployment policy: not through the form, not through REST, not at execute time.

Regressions of issue 13's first finding: ``model_path``/``model_sha256`` were trigger params (a pickle in
the dataset, offered with its own SHA-256, ran inside the anonymize task), and ``classes=["plate"]``,
confidence 0.99, verify confidence 0.99 and ``max_passes=0`` were accepted and signed as sanitized.
"""

from __future__ import annotations

import hashlib
import pickle

import pytest

from secure_data.policy import PolicyError, PolicyViolation, effective_anonymize_options, load_policy
from secure_data_testkit.airflow_env import REPO_ROOT

WEAKER = [
    ({"classes": ["plate"]}, "leaves out ['face']"),
    ({"confidence": 0.99}, "confidence must be <= 0.25"),
    ({"verify_confidence": 0.99}, "verification confidence must be <= 0.1"),
    ({"max_passes": 0}, "passes must be >= 2"),
    ({"imgsz": 160}, "inference size must be >= 640"),
    ({"residual_policy": "accept"}, "residual_policy 'accept' is not one of"),
    ({"verify": False}, "verification of every output is required"),
]
MODEL_CHOICES = [{"model_path": "/data/evil.pt"}, {"model_sha256": "0" * 64}, {"face_model_path": "/x.onnx"},
                 {"detectors": [{"model_path": "/data/evil.pt", "model_sha256": "0" * 64}]},
                 {"backbone_model": "/data/evil.pt"}]


class _Boom:
    """A pickle that writes a marker file when it is loaded (what a malicious ``.pt`` does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _sanitization_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "secure_pretraining_sanitization.py"))
    assert bag.import_errors == {}
    return bag.dags["secure_pretraining_sanitization"]


@pytest.mark.parametrize("request_, needle", WEAKER)
def test_weaker_request_is_refused_with_a_readable_message(deployment_models, request_, needle):
    policy = load_policy()
    with pytest.raises(PolicyViolation) as err:
        effective_anonymize_options(policy, request_)
    assert needle in str(err.value) and policy.digest in str(err.value)


@pytest.mark.parametrize("request_", MODEL_CHOICES)
def test_run_parameters_cannot_choose_a_model(deployment_models, request_):
    with pytest.raises(PolicyViolation, match="models and their pins come from the deployment policy only"):
        effective_anonymize_options(load_policy(), request_)


def test_tightening_is_accepted_and_models_are_the_deployments(deployment_models):
    policy = load_policy()
    options = effective_anonymize_options(policy, {"classes": ["face", "plate", "person"], "confidence": 0.1,
                                                   "verify_confidence": 0.05, "max_passes": 4, "imgsz": 1280,
                                                   "residual_policy": "fail", "on_residual": "quarantine"})
    assert options["classes"] == ["face", "plate", "person"]
    assert (options["conf"], options["verify_conf"], options["max_passes"], options["imgsz"]) == (0.1, 0.05, 4, 1280)
    assert (options["residual_policy"], options["on_residual"]) == ("fail", "quarantine")
    assert [d["model_path"] for d in options["detectors"]] == [str(deployment_models)]
    # no request: the policy itself
    defaults = effective_anonymize_options(policy, {})
    assert (defaults["conf"], defaults["verify_conf"], defaults["max_passes"]) == (0.25, 0.10, 2)


def test_policy_digest_covers_pins_and_floors_not_paths(deployment_models, tmp_path, monkeypatch):
    first = load_policy().digest
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(deployment_models.read_bytes())
    monkeypatch.setenv("SECURE_DATA_MODEL_PATH", str(moved))
    assert load_policy().digest == first  # where a file lies is not what it is
    monkeypatch.setenv("SECURE_DATA_MODEL_SHA256", "1" * 64)
    assert load_policy().digest != first
    stricter = tmp_path / "policy.yaml"
    stricter.write_text((REPO_ROOT / "plugins/secure_data/policy/builtin.yaml").read_text().replace(
        "conf: 0.25", "conf: 0.2"))
    monkeypatch.setenv("SECURE_DATA_POLICY_FILE", str(stricter))
    assert load_policy().conf == 0.2 and load_policy().source == str(stricter)


def test_a_broken_or_modelless_policy_is_refused(tmp_path, monkeypatch):
    for name in ("SECURE_DATA_MODEL_PATH", "SECURE_DATA_FACE_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SECURE_DATA_POLICY_FILE", raising=False)
    with pytest.raises(PolicyError, match="names no detector"):
        load_policy().require_models()
    monkeypatch.setenv("SECURE_DATA_POLICY_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(PolicyError, match="cannot read the deployment policy"):
        load_policy()
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: secure-data/deployment-policy/v1\nconf: 2\nmodels: deployment\n")
    monkeypatch.setenv("SECURE_DATA_POLICY_FILE", str(bad))
    with pytest.raises(PolicyError, match="conf must be in"):
        load_policy()


def test_trigger_form_has_no_model_params_and_bounds_values_by_the_policy(deployment_models):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    dag = _sanitization_dag()
    names = set(dag.params.keys())
    assert not names & {"model_path", "model_sha256", "face_model_path", "face_model_sha256", "vault_conn_id"}
    for weaker in ({"confidence": 0.99}, {"verify_confidence": 0.99}, {"max_passes": 0}, {"classes": ["plate"]},
                   {"residual_policy": "accept"}, {"imgsz": 160}):
        params = ParamsDict(dict(dag.params.items()))
        with pytest.raises(ParamValidationError, match=next(iter(weaker))):
            params.update(weaker)
            params.validate()
    params = ParamsDict(dict(dag.params.items()))
    params.update({"confidence": 0.1, "max_passes": 5, "classes": ["face", "plate", "person"]})
    params.validate()


def test_no_task_of_the_dag_reads_a_model_or_a_trust_anchor_from_params(deployment_models):
    import re

    dag = _sanitization_dag()
    mentioned = set()
    for task in dag.tasks:
        partial = getattr(task, "partial_kwargs", {}) or {}
        for field in task.template_fields:
            value = partial.get(field, getattr(task, field, None))
            mentioned |= set(re.findall(r"params\.(\w+)", repr(value)))
    assert mentioned, "the DAG's templates were not found"
    assert not mentioned & {"model_path", "model_sha256", "face_model_path", "face_model_sha256", "vault_conn_id"}


def test_pickle_offered_through_params_is_never_loaded(deployment_models, tmp_path):
    """The attack of finding 1: a pickle in the dataset, offered with its own SHA-256 as the model."""
    from airflow.sdk.exceptions import AirflowFailException

    from secure_data.operators.policy import PolicyAnonymizeOperator, PolicyPoisoningOperator

    marker = tmp_path / "pwned"
    evil = tmp_path / "dataset" / "images" / "train" / "evil.pt"
    evil.parent.mkdir(parents=True)
    evil.write_bytes(pickle.dumps(_Boom(marker)))
    pin = hashlib.sha256(evil.read_bytes()).hexdigest()
    conf = {"model_path": str(evil), "model_sha256": pin}
    op = PolicyAnonymizeOperator(task_id="anonymize", upstream={}, policy_request=conf)
    with pytest.raises(AirflowFailException, match="come from the deployment policy only"):
        op.execute({})
    poisoning = PolicyPoisoningOperator(task_id="poisoning", upstream={}, backbone_check=True,
                                        config={"backbone_model": str(evil), "backbone_model_sha256": pin})
    with pytest.raises(AirflowFailException, match="deployment policy only"):
        poisoning.execute({})
    assert not marker.exists()


def test_execute_time_check_refuses_what_the_form_would_have(deployment_models):
    """A triggerer can bypass the form (REST with another conf, or an edited serialized DAG): the
    worker re-checks against its own policy."""
    from airflow.sdk.exceptions import AirflowFailException

    from secure_data.operators.policy import PolicyCheckOperator

    op = PolicyCheckOperator(task_id="policy", policy_request={"confidence": 0.99, "max_passes": 0,
                                                               "classes": ["plate"]})
    with pytest.raises(AirflowFailException) as err:
        op.execute({})
    for needle in ("confidence 0.99", "max_passes 0", "leaves out ['face']"):
        assert needle in str(err.value)
    ok = PolicyCheckOperator(task_id="policy", policy_request={"confidence": 0.2}).execute({})
    assert ok["policy_digest"] == load_policy().digest and ok["effective"]["conf"] == 0.2
