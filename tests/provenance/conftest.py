"""Provenance fixtures: the real sanitizer / trainer identities on the session OpenBao, and their signers."""

from __future__ import annotations

import json

import pytest

from secure_data_testkit.vault_fixtures import bootstrap_test_vault


@pytest.fixture(scope="session")
def vault(openbao):
    return bootstrap_test_vault(openbao)


@pytest.fixture(scope="session")
def identities(openbao, vault):
    """``{role: VaultKeyService}`` for the sanitizer and the trainer (one AppRole login each)."""
    from secure_data.vault.keyservice import VaultKeyService

    return {role: VaultKeyService.for_approle(openbao.url, vault.role(role).role_id, vault.role(role).secret_id)
            for role in ("sanitizer", "trainer")}


@pytest.fixture(scope="session")
def sanitizer_ks(identities):
    return identities["sanitizer"]


@pytest.fixture(scope="session")
def trainer_ks(identities):
    return identities["trainer"]


@pytest.fixture(scope="session")
def attestation_signer(sanitizer_ks):
    """The sanitizer's Transit ECDSA signer (the private key stays in OpenBao)."""
    from secure_data.handoff.attest import TransitAttestationSigner

    return TransitAttestationSigner(sanitizer_ks.ops)


@pytest.fixture(scope="session")
def public_key_pem(trainer_ks, tmp_path_factory):
    """The attestation key's public key, exported by the TRAINER (read-only on the key) to a PEM file."""
    from secure_data.handoff.attest import export_public_key

    path = tmp_path_factory.mktemp("keys") / "attestation.pub.pem"
    path.write_bytes(export_public_key(trainer_ks.ops))
    return path


@pytest.fixture(scope="session")
def chain(openbao, vault, airflow_home, tmp_path_factory):
    """The real sanitization DAG (dags/secure_pretraining_sanitization.py) once, in process (``dag.test``),
    with the OpenLineage provider's listener writing every event to files (file transport).

    Returns a namespace: the DagRun, the run folder, XCom values by task, the event files, the source.
    """
    from types import SimpleNamespace

    from secure_data_testkit.airflow_env import REPO_ROOT
    from secure_data_testkit.demo import make_demo_dataset, model_env, write_demo_policy
    from secure_data_testkit.models import centerface_model, demo_detector
    from secure_data_testkit.vault_fixtures import vault_connection_env

    work = tmp_path_factory.mktemp("chain")
    source = make_demo_dataset(work / "source", n_train=5, n_val=3)
    (source / "images" / "train" / "broken.jpg").write_bytes(b"not a jpeg")  # a quarantine reason to trace
    events = work / "openlineage"
    events.mkdir()
    model_path, model_sha = demo_detector()
    face_path, face_sha = centerface_model()
    env = {
        **vault_connection_env(openbao, "sanitizer"),
        **model_env({"model_path": str(model_path), "model_sha256": model_sha, "face_model_path": str(face_path),
                     "face_model_sha256": face_sha}),
        "SECURE_DATA_POLICY_FILE": str(write_demo_policy(work / "policy.yaml")),
        "SECURE_DATA_OUTPUT_ROOT": str(work / "runs"),
        "SECURE_DATA_PACKAGE_ROOT": str(work / "packages"),
        "SECURE_DATA_SCHEDULE": "none",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events / "event")}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "secure-data-test",
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }
    patch = pytest.MonkeyPatch()
    for name, value in env.items():
        patch.setenv(name, value)
    listener = _openlineage_listener()
    try:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "secure_pretraining_sanitization.py"))
        assert bag.import_errors == {}
        dag = bag.get_dag("secure_pretraining_sanitization")
        conf = {"source": str(source), "imgsz": 320, "confidence": 0.5, "verify_confidence": 0.3, "max_passes": 3,
                "shard_size": 6}
        dag_run = dag.test(run_conf={k: v for k, v in conf.items() if k in dag.params})
    finally:
        _remove_listener(listener)
        patch.undo()
        _clear_openlineage_config()
    import sqlite3

    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute("select task_id, value from xcom where dag_id=? and run_id=? and key='return_value' "
                          "and map_index=-1", (dag.dag_id, dag_run.run_id)).fetchall()
    xcom = {task: json.loads(value) for task, value in rows}
    return SimpleNamespace(dag_run=dag_run, dag_id=dag.dag_id, xcom=xcom, events=events, source=source,
                           work=work, env=env)


def _clear_openlineage_config() -> None:
    """The provider caches its configuration (and whether it is enabled) per process: start from the env."""
    from airflow.providers.openlineage import conf

    for value in vars(conf).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


def _openlineage_listener():
    """Register the provider's listener with the Task SDK's listener manager for this run only.

    The provider's plugin decides at import time whether to register it, and other tests of the session
    may have imported it while OpenLineage was not configured; registering it here makes this run emit
    regardless of test order.
    """
    from airflow.providers.openlineage.plugins.listener import OpenLineageListener
    from airflow.sdk.listener import get_listener_manager

    _clear_openlineage_config()
    manager = get_listener_manager()
    if any(isinstance(p, OpenLineageListener) for p in manager.pm.get_plugins()):
        return None  # the provider's plugin registered it already (OpenLineage configured at startup)
    listener = OpenLineageListener()
    manager.add_listener(listener)
    return listener


def _remove_listener(listener) -> None:
    """Unregister every OpenLineage listener: after this run OpenLineage is not configured in this process."""
    from airflow.providers.openlineage.plugins.listener import OpenLineageListener
    from airflow.sdk.listener import get_listener_manager

    manager = get_listener_manager()
    for plugin in list(manager.pm.get_plugins()):
        if isinstance(plugin, OpenLineageListener) or plugin is listener:
            manager.pm.unregister(plugin)
