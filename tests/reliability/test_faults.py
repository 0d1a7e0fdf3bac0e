"""Faults injected into live runs of the real chain: a real OpenBao (raft storage, restartable on its
port), a real Airflow (API server, scheduler, DAG processor, triggerer; LocalExecutor) and the real DAGs.

Each module-scoped fixture runs one scenario of ``secure_data.testing.faults`` once; the tests assert
the promises separately, so a failure names the promise that broke. The slower scenarios (8 runs at
once, credentials revoked, two same-source runs without a kill) run in
``bench/reliability_scenarios.py`` (RELIABILITY.md).
"""

from __future__ import annotations

import pytest

from secure_data.testing import faults

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with faults.FaultLab(workdir=tmp_path_factory.mktemp("faults"), log=lambda m: print(f"[faults] {m}")) as fl:
        yield fl


@pytest.fixture(scope="module")
def vault_restart(lab) -> faults.Outcome:
    return faults.scenario_vault_restart(lab)


@pytest.fixture(scope="module")
def corrupted(lab, vault_restart) -> faults.Outcome:
    package = vault_restart.evidence
    if not package.get("package_uri"):  # scenario 1 broke: publish a package with a plain run
        run_id = lab.trigger(lab.dataset("for-corruption"))
        lab.wait_run(run_id)
        package = lab.package_of(run_id)
    return faults.scenario_corrupted_package(lab, package["package_uri"], package["package_id"])


@pytest.fixture(scope="module")
def sigkill(lab) -> faults.Outcome:
    """The killed run and an uninterrupted one run at the same time on the same source and output root."""
    return faults.scenario_sigkill_anonymize(lab)


@pytest.fixture(scope="module")
def token_revoked(lab) -> faults.Outcome:
    return faults.scenario_token_revoked(lab)


@pytest.fixture(scope="module")
def disk_full(lab) -> faults.Outcome:
    outcome = faults.scenario_disk_full(lab)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    return outcome


# ----------------------------------------------------------------------------- 1. OpenBao down


def test_vault_outage_fails_the_vault_task_clearly_then_the_retry_succeeds(vault_restart):
    ev = vault_restart.evidence
    assert ev["handoff_tries"] >= 2, vault_restart.observed
    assert any("VaultUnreachableError" in e and "unreachable" in e for e in ev["errors"]), ev["errors"]
    assert all(gap >= 5 for gap in ev["retry_gaps_s"]), ev["retry_gaps_s"]  # Airflow waited before retrying
    assert vault_restart.ok, vault_restart.failures


def test_training_runs_on_the_package_published_after_the_outage(vault_restart):
    assert vault_restart.evidence["training_state"] == "success", vault_restart.observed


# ----------------------------------------------------------------------------- 5. corrupted package


def test_corrupted_package_is_refused_with_the_file_named(corrupted):
    ev = corrupted.evidence
    assert any("PackageIntegrityError" in e and ev["file"] in e for e in ev["errors"]), ev["errors"]
    assert corrupted.ok, corrupted.failures


# ----------------------------------------------------------------------------- 2 + 7. SIGKILL, same source


def test_sigkilled_anonymize_task_is_retried_and_resumes(sigkill):
    ev = sigkill.evidence
    assert ev["killed"], ev["note"]
    assert ev["result_absent_at_kill"] and 0 < ev["audit_lines_at_kill"] < ev["images"], ev
    assert ev["anonymize_tries"][0] == "failed" and ev["anonymize_tries"][-1] == "success", ev["anonymize_tries"]
    assert ev["resumed_images"] > 0, "the retry recomputed everything instead of resuming"


def test_output_after_the_kill_is_identical_to_an_uninterrupted_run(sigkill):
    assert sigkill.evidence.get("files_compared", 0) > 0, sigkill.observed
    assert not [f for f in sigkill.failures if "differ" in f], sigkill.failures


def test_no_partial_files_are_left_after_the_kill(sigkill):
    assert sigkill.evidence["partial_files"] == []


def test_two_runs_on_one_source_and_output_root_at_once_stay_apart(lab, sigkill):
    killed, clean = sigkill.evidence["killed_run"], sigkill.evidence["clean_run"]
    a, b = lab.layout(killed).root, lab.layout(clean).root
    assert a != b and not a.is_relative_to(b) and not b.is_relative_to(a)
    pa, pb = lab.package_of(killed), lab.package_of(clean)
    assert pa["package_id"] != pb["package_id"]
    assert sigkill.evidence.get("package_files", 0) > 0  # both opened (signature, unwrap, every hash)
    assert sigkill.ok, sigkill.failures


# ----------------------------------------------------------------------------- 3. token revoked


def test_run_survives_its_vault_tokens_being_revoked_mid_run(token_revoked):
    ev = token_revoked.evidence
    assert ev["revoked_after_preflight"] >= 1
    assert token_revoked.ok, token_revoked.failures
    # One new login per revoked token at most: a revoked token never makes the task loop on logins.
    assert len(ev["login_lines"]) <= 1 + ev["revoked_during_handoff"], ev["login_lines"]


# ----------------------------------------------------------------------------- 4. disk full


def test_full_package_disk_fails_the_handoff_with_a_clear_error(disk_full):
    assert any("No space left on device" in e for e in disk_full.evidence["errors"]), disk_full.evidence["errors"]


def test_full_package_disk_leaves_no_partial_package_and_announces_nothing(disk_full):
    assert disk_full.evidence["leftovers"] == []
    assert disk_full.evidence["events"] == 0


def test_after_space_is_freed_clearing_the_task_publishes_the_package(disk_full):
    assert disk_full.evidence["events_after_recovery"] == 1, disk_full.observed


def test_a_run_whose_handoff_failed_is_marked_failed(disk_full):
    """FAILS today (defect in dags/secure_pretraining_sanitization.py): the only leaf task is ``report``,
    whose trigger rule is ALL_DONE, so it succeeds after the handoff failed and Airflow marks the whole
    run ``success``: no package, no Asset event, yet a green run (alerts on failed runs stay silent)."""
    assert disk_full.evidence["run_state"] == "failed", disk_full.observed
