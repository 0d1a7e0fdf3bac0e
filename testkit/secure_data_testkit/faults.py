"""Fault scenarios against the real chain: a real OpenBao (persistent, so it can be restarted),
a real Airflow (API server, scheduler, DAG processor, triggerer; LocalExecutor) and the real DAGs.

Used by ``bench/reliability_scenarios.py`` (every scenario, a Markdown table) and
``tests/reliability/test_faults.py`` (the fast ones). Each scenario injects one fault
into a live DAG run, waits for the outcome, and returns an :class:`Outcome`: what was
expected, what was observed, the evidence, and the list of checks that did not hold
(empty = the promise held). Nothing here mocks a component: faults are real
(a stopped server, a SIGKILL, a revoked token, a full filesystem, a flipped byte).

    with FaultLab(workdir) as lab:
        outcome = scenario_vault_restart(lab)
        assert outcome.ok, outcome.failures
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from secure_data_testkit.demo import SANITIZE_DAG, TRAIN_DAG, DemoServices, make_demo_dataset

PARTIAL_SUFFIXES = (".tmp", ".partial")
SANITIZER, TRAINER = "sanitizer", "trainer"


class ScenarioError(RuntimeError):
    """The harness could not drive the scenario (a timeout, a run that never started): not a verdict."""


@dataclass(frozen=True)
class Outcome:
    """Result of one scenario. ``failures`` lists the promises that did not hold; empty means it passed."""

    scenario: str
    expected: str
    observed: str
    seconds: float
    failures: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None and not self.failures

    @property
    def verdict(self) -> str:
        return "skipped" if self.skipped else ("pass" if self.ok else "FAIL")


class Checks:
    """Collects named checks of one scenario, so a report names every promise that broke, not only the first."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def that(self, condition: Any, what: str) -> bool:
        if not condition:
            self.failures.append(what)
        return bool(condition)


# ------------------------------------------------------------------------------------------ files


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``root`` (symlinks are not followed)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def partial_files(*roots: Path) -> list[str]:
    """Left-overs of interrupted writes: ``.tmp`` files and ``.partial`` folders under ``roots``."""
    found = []
    for root in roots:
        if Path(root).exists():
            found += [str(p) for p in Path(root).rglob("*") if p.name.endswith(PARTIAL_SUFFIXES)]
    return sorted(found)


def flip_byte(path: Path, offset: int | None = None) -> int:
    """XOR one byte (default: the middle one) with 0x01; returns the offset."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return at


# ------------------------------------------------------------------------------------- small filesystem


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``path`` (needs root); False if this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def filled(path: Path, leave: int):
    """Fill the filesystem of ``path`` until only about ``leave`` bytes are free; free it again on exit."""
    filler = path / ".disk-filler"
    size = max(0, free_bytes(path) - leave)
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    try:
        yield free_bytes(path)
    finally:
        filler.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- the lab


@dataclass
class FaultLab:
    """DemoServices with a persistent OpenBao and the package root on a small tmpfs (when root may mount).

    ``package_fs_size``: size of that tmpfs (the disk-full scenario fills it). Without mount
    rights the package root is a plain folder and the disk-full scenario reports itself skipped.
    ``extra_env``: more environment for Airflow (e.g. ``AIRFLOW__CORE__DAGS_FOLDER`` to try a patched DAG).
    """

    workdir: Path
    log: Callable[[str], None] = print
    package_fs_size: str = "64m"
    extra_env: dict[str, str] = field(default_factory=dict)
    services: DemoServices | None = None
    small_fs: bool = False
    _root_client: Any = None
    _datasets: int = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FaultLab:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        package_root = self.workdir / "packages"
        self.small_fs = mount_tmpfs(package_root, self.package_fs_size)
        self.log(f"package root {package_root}: "
                 + (f"tmpfs of {self.package_fs_size}" if self.small_fs else "plain folder (tmpfs not mountable)"))
        try:
            self.services = DemoServices(workdir=self.workdir, log=self.log, persistent_bao=True,
                                         package_root=package_root, extra_env=dict(self.extra_env)).start()
        except BaseException:
            self._unmount()
            raise
        return self

    def stop(self) -> None:
        try:
            if self.services is not None:
                self.services.stop()
        finally:
            self._unmount()

    def _unmount(self) -> None:
        if self.small_fs:
            umount(self.workdir / "packages")
            self.small_fs = False

    def __enter__(self) -> FaultLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- handles ---------------------------------------------------------------------------------

    @property
    def stack(self):
        return self.services.stack

    @property
    def bao(self):
        return self.services.bao

    @property
    def packages_root(self) -> Path:
        return self.services.packages_root

    @property
    def root_client(self):
        import hvac

        if self._root_client is None:
            self._root_client = hvac.Client(url=self.bao.url, token=self.bao.root_token)
        return self._root_client

    def key_service(self, role: str):
        """A Transit key service of ``role`` for the harness's own checks (verify, open packages)."""
        from secure_data.vault.keyservice import VaultKeyService

        creds = self.services.creds.role(role)
        return VaultKeyService.for_approle(self.bao.url, creds.role_id, creds.secret_id)

    def accessors(self, role: str) -> set[str]:
        from secure_data_testkit.vault_fixtures import accessors_of

        return accessors_of(self.root_client, role)

    # -- datasets and runs -----------------------------------------------------------------------

    def dataset(self, name: str, *, n_train: int = 4, n_val: int = 2, seed: int | None = None,
                real_photos: bool = False, size: tuple[int, int] = (320, 240)) -> Path:
        """A fresh generated YOLO dataset (6 images by default: this machine is small and shared)."""
        self._datasets += 1
        return make_demo_dataset(self.workdir / "sources" / name, n_train=n_train, n_val=n_val, size=size,
                                 include_real_photos=real_photos, seed=seed if seed is not None else 100 + self._datasets)

    def trigger(self, source: Path, **conf: Any) -> str:
        # No model params: the models come from the deployment (DemoServices sets them on every process).
        return self.stack.trigger(SANITIZE_DAG, {"source": str(source), **conf})

    def layout(self, run_id: str, dag_id: str = SANITIZE_DAG):
        from secure_data.dataset.stage import RunLayout

        return RunLayout.for_run(self.services.output_root, dag_id, run_id)

    def task(self, run_id: str, task_id: str, *, map_index: int = -1, dag_id: str = SANITIZE_DAG) -> dict[str, Any]:
        for ti in self.stack.task_instances(dag_id, run_id):
            if ti["task_id"] == task_id and ti["map_index"] == map_index:
                return ti
        raise ScenarioError(f"no task instance {task_id}[{map_index}] in {dag_id}/{run_id}")

    def wait_task(self, run_id: str, task_id: str, until: Callable[[dict[str, Any]], bool], *, timeout: float = 600,
                  map_index: int = -1, dag_id: str = SANITIZE_DAG, poll: float = 0.5) -> dict[str, Any]:
        """Poll one task instance until ``until(ti)``; ScenarioError on timeout."""
        deadline = time.monotonic() + timeout
        ti: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(ScenarioError):
                ti = self.task(run_id, task_id, map_index=map_index, dag_id=dag_id)
                if until(ti):
                    return ti
            time.sleep(poll)
        raise ScenarioError(f"{dag_id}/{run_id} {task_id}[{map_index}]: condition not reached in {timeout}s "
                            f"(last state {ti.get('state')}, try {ti.get('try_number')})")

    def wait_run(self, run_id: str, *, timeout: float = 1200, dag_id: str = SANITIZE_DAG) -> dict[str, Any]:
        return self.stack.wait_for_run(dag_id, run_id, timeout)

    def tries(self, run_id: str, task_id: str, *, map_index: int = -1, dag_id: str = SANITIZE_DAG) -> list[dict]:
        """Every try of one task instance (history + current), oldest first."""
        from urllib.request import quote

        index = f"/{map_index}" if map_index >= 0 else ""
        resp = self.stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
                              f"{task_id}{index}/tries")
        return sorted(resp["task_instances"], key=lambda t: t["try_number"])

    def log_of(self, run_id: str, task_id: str, try_number: int, *, map_index: int = -1,
               dag_id: str = SANITIZE_DAG) -> str:
        return self.stack.task_log(dag_id, run_id, task_id, try_number, map_index)

    def xcom(self, run_id: str, task_id: str, *, map_index: int = -1, dag_id: str = SANITIZE_DAG) -> Any:
        return self.stack.xcom(dag_id, run_id, task_id, map_index=map_index)

    def training(self, *, paused: bool) -> None:
        """Pause or unpause the Asset-triggered training DAG (its runs are CPU-heavy on a shared 2-core box).

        Unpausing first drops the events queued meanwhile, so no stale training run starts."""
        if not paused:
            with contextlib.suppress(Exception):
                self.stack.api("DELETE", f"/api/v2/dags/{TRAIN_DAG}/assets/queuedEvents")
        self.stack.set_paused(TRAIN_DAG, paused)

    def package_of(self, run_id: str) -> dict[str, Any]:
        return (self.xcom(run_id, "handoff") or {}).get("extra", {})

    def training_run_for(self, run_id: str, timeout: float = 600) -> dict[str, Any]:
        """The training run created by the Asset event of sanitization run ``run_id``, once finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.stack.asset_events(source_dag_id=SANITIZE_DAG, source_run_id=run_id):
                for created in event.get("created_dagruns") or ():
                    if created["dag_id"] == TRAIN_DAG:
                        return self.wait_run(created["run_id"], dag_id=TRAIN_DAG,
                                             timeout=max(1.0, deadline - time.monotonic()))
            time.sleep(2)
        raise ScenarioError(f"no training run was created by the package event of {run_id} within {timeout}s")


# ------------------------------------------------------------------------------------------ helpers


def _elapsed(start: float) -> float:
    return round(time.monotonic() - start, 1)


def _failed_tries(tries: Iterable[dict[str, Any]]) -> list[int]:
    return [t["try_number"] for t in tries if t["state"] in ("failed", "up_for_retry")]


def _retry_gaps(tries: list[dict[str, Any]]) -> list[float]:
    """Seconds between the end of each try and the start of the next (Airflow's retry delay, as lived)."""
    def ts(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    gaps = []
    for prev, nxt in zip(tries, tries[1:], strict=False):
        if prev.get("end_date") and nxt.get("start_date"):
            gaps.append(round((ts(nxt["start_date"]) - ts(prev["end_date"])).total_seconds(), 1))
    return gaps


def _short(text: str, size: int = 170) -> str:
    """Head and tail of a long message (the tail of a connection error holds its reason)."""
    return text if len(text) <= size else f"{text[:size - 70]} ... {text[-60:]}"


def _log_lines(log: str, *needles: str, limit: int = 3) -> list[str]:
    """Log events containing any of ``needles``; a task's exception is given as ``ExcType: message``."""
    out = []
    for line in log.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            item = {"event": line}
        if not isinstance(item, dict):
            item = {"event": line}
        texts = [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in item.get("error_detail") or ()
                 if isinstance(e, dict)] or [str(item.get("event", ""))]
        out += [t[:400] for t in texts if any(n in t for n in needles)]
    return out[:limit]


def find_task_process(ti_id: str):
    """The task-runner process of one task instance: Airflow titles it ``airflow worker -- <ti id>``
    (its supervisor is ``airflow worker -- LocalExecutor: <ti id>``)."""
    import psutil

    wanted = f"airflow worker -- {ti_id}"
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or []).strip()
        if cmd.startswith(wanted) and "LocalExecutor" not in cmd:
            return proc
    return None


def _source_records(source: Path) -> set[tuple[str, str]]:
    return set(tree(source).items())


def _manifest_records(path: str, digest: str):
    from secure_data.dataset.manifest import read_manifest

    return read_manifest(path, expected_digest=digest).records


# ============================================================================================ scenarios


def scenario_vault_restart(lab: FaultLab, *, timeout: float = 900) -> Outcome:
    """1. OpenBao stopped after preflight and started again once a Vault task has failed on it."""
    return _vault_outage(
        lab, "1. OpenBao stopped mid-run, restarted", down=lab.bao.stop,
        up=lab.bao.start,  # same port, same raft storage: unsealed with the keys from its first init
        error_class="VaultUnreachableError", what="stopped", with_training=True, timeout=timeout)


def scenario_vault_sealed(lab: FaultLab, *, timeout: float = 900) -> Outcome:
    """1b. OpenBao sealed after preflight and unsealed once a Vault task has failed on it."""
    return _vault_outage(lab, "1b. OpenBao sealed mid-run, unsealed", down=lab.bao.seal, up=lab.bao.unseal,
                         error_class="VaultSealedError", what="sealed", with_training=False, timeout=timeout)


def _vault_outage(lab: FaultLab, name: str, *, down: Callable[[], None], up: Callable[[], None], error_class: str,
                  what: str, with_training: bool, timeout: float) -> Outcome:
    expected = (f"the Vault task fails fast with {error_class}, Airflow retries it with backoff; once Vault is "
                "back the run succeeds" + (" and the Asset-triggered training too" if with_training else ""))
    start, c = time.monotonic(), Checks()
    lab.training(paused=not with_training)
    source = lab.dataset(f"vault-{what}")
    run_id = lab.trigger(source)
    lab.wait_task(run_id, "preflight", lambda t: t["state"] == "success", timeout=timeout)
    down()
    stopped = time.monotonic()
    try:
        lab.wait_task(run_id, "handoff", lambda t: t["state"] in ("up_for_retry", "failed"), timeout=timeout)
    finally:
        up()
    down_s = round(time.monotonic() - stopped, 1)
    run = lab.wait_run(run_id, timeout=timeout)
    tries = lab.tries(run_id, "handoff")
    errors = _log_lines(lab.log_of(run_id, "handoff", tries[0]["try_number"]), error_class)
    c.that(run["state"] == "success", f"sanitization run ended {run['state']}")
    c.that(len(tries) >= 2 and _failed_tries(tries), f"handoff did not fail and retry while Vault was {what}")
    c.that(errors, f"the failed try's log has no {error_class}")
    train_state = None
    package = lab.package_of(run_id) if run["state"] == "success" else {}
    if with_training and package:
        train = lab.training_run_for(run_id, timeout=timeout)
        train_state = train["state"]
        trained = lab.xcom(train["dag_run_id"], "train", dag_id=TRAIN_DAG) if train_state == "success" else {}
        c.that(train_state == "success", f"training run ended {train_state}")
        c.that((trained or {}).get("package_id") == package.get("package_id"), "training used another package")
    gaps = _retry_gaps(tries)
    observed = (f"Vault {what} for {down_s}s; handoff tries {[t['state'] for t in tries]}, retry after {gaps} s; "
                f"{_short(errors[0]) if errors else '-'}; run {run['state']}"
                + (f", training {train_state}" if with_training else ""))
    return Outcome(name, expected, observed, _elapsed(start), tuple(c.failures),
                   {"run_id": run_id, "down_s": down_s, "handoff_tries": len(tries), "retry_gaps_s": gaps,
                    "errors": errors, "training_state": train_state, "package_uri": package.get("package_uri"),
                    "package_id": package.get("package_id")})


def scenario_corrupted_package(lab: FaultLab, package_uri: str, package_id: str, *, timeout: float = 600) -> Outcome:
    """5. One byte flipped in a copy of a published package; the training DAG triggered by hand on it."""
    from secure_data.handoff.package import package_path

    name = "5. corrupted package handed to training"
    expected = "training refuses it: the run fails with PackageIntegrityError naming the modified file"
    start, c = time.monotonic(), Checks()
    lab.training(paused=False)
    original = package_path(package_uri)
    copy = lab.workdir / "tampered" / original.name
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(original, copy)
    victim = sorted((copy / "data" / "images").rglob("*.enc"))[0]
    rel = victim.relative_to(copy).as_posix()
    offset = flip_byte(victim)
    run_id = lab.stack.trigger(TRAIN_DAG, {"package_uri": str(copy), "package_id": package_id})
    run = lab.wait_run(run_id, dag_id=TRAIN_DAG, timeout=timeout)
    ti = lab.task(run_id, "train", dag_id=TRAIN_DAG)
    log = lab.log_of(run_id, "train", ti["try_number"], dag_id=TRAIN_DAG)
    errors = _log_lines(log, "PackageIntegrityError", "decryption failed")
    c.that(run["state"] == "failed", f"training run on a corrupted package ended {run['state']}")
    c.that(any(rel in e for e in errors), f"the error does not name the modified file {rel}")
    observed = f"flipped byte {offset} of {rel}; training run {run['state']}: {_short(errors[0], 200) if errors else '-'}"
    return Outcome(name, expected, observed, _elapsed(start), tuple(c.failures),
                   {"run_id": run_id, "file": rel, "offset": offset, "errors": errors})


def scenario_token_revoked(lab: FaultLab, *, timeout: float = 900) -> Outcome:
    """3a. Every live sanitizer token revoked by an admin mid-run (after preflight), and the handoff's
    own token revoked as soon as it appears on the server."""
    name = "3a. sanitizer tokens revoked mid-run"
    expected = "a task whose token is gone logs in again (AppRole) and the run succeeds"
    start, c = time.monotonic(), Checks()
    handoff_at_sweep = None
    lab.training(paused=True)
    source = lab.dataset("token-revoked")
    run_id = lab.trigger(source)
    lab.wait_task(run_id, "preflight", lambda t: t["state"] == "success", timeout=timeout)
    revoked_by_admin = _revoke_all(lab, SANITIZER)
    revoked_after_preflight = len(revoked_by_admin)
    known = lab.accessors(SANITIZER)
    # Where the run was when the sweep ended: on a loaded machine the API can answer "preflight done"
    # late enough that the hand-off has started (and logged in) before the sweep.
    with contextlib.suppress(ScenarioError):
        handoff_at_sweep = lab.task(run_id, "handoff").get("state")
    # Watch for the handoff's login and revoke that token at once: the task is then mid-way.
    watcher = _TokenRevoker(lab, SANITIZER, known)
    watcher.start()
    try:
        run = lab.wait_run(run_id, timeout=timeout)
    finally:
        watcher.stop()
    ti = lab.task(run_id, "handoff")
    log = lab.log_of(run_id, "handoff", ti["try_number"])
    relogin = _log_lines(log, "logging in again", "was rejected", limit=100)
    logins = _log_lines(log, "Vault login #", limit=100)
    # Which token each login got (the session logs token_ref(accessor)), which tokens the scenario revoked
    # (the sweep after preflight, the watcher) and which of the handoff's tokens are still alive now.
    from secure_data.vault.session import token_ref

    revoked_refs = {token_ref(a) for a in (*revoked_by_admin, *watcher.revoked)}
    live_refs = {token_ref(a) for a in lab.accessors(SANITIZER)}
    login_refs = [m.group(1) for line in logins if (m := _TOKEN_REF.search(line))]
    rejected_refs = [m.group(1) for line in relogin if (m := _TOKEN_REF.search(line))]
    c.that(revoked_after_preflight >= 1, "no live sanitizer token to revoke after preflight")
    c.that(run["state"] == "success", f"run ended {run['state']} after its tokens were revoked")
    c.that(logins, "the handoff's log shows no Vault login")
    c.that(len(login_refs) == len(logins), f"a login line names no token ref: {logins}")
    # One new login per dead token, judged twice. The server: every token a later login replaced is gone
    # from it (a session that logged in again while its token lived would leave that token alive, TTL 1 h).
    # The log: each re-login follows the rejection of exactly the token before it. A ref "?" is a token
    # already dead at its first lookup-self (revoked between login and lookup: "cannot look itself up").
    alive = [ref for ref in login_refs[:-1] if ref in live_refs]
    c.that(not alive, f"{len(logins)} logins in the handoff, but the token(s) {alive} they replaced are still "
                      f"alive on the server")
    unexplained = [ref for ref in login_refs[:-1] if ref != "?" and ref not in rejected_refs]
    c.that(not unexplained, f"a re-login without a rejection of the token before it: {unexplained} "
                            f"(rejections: {rejected_refs})")
    known_refs = [ref for ref in login_refs if ref != "?"]
    c.that(len(set(known_refs)) == len(known_refs), f"a login line repeats a token: {login_refs}")
    how = ("revoked mid-task, re-login seen in the log" if relogin else
           "handoff's token revoked after its last Vault call or before it logged in: fresh login per task")
    observed = (f"revoked {revoked_after_preflight} token(s) after preflight and {len(watcher.revoked)} handoff "
                f"token(s) as they appeared; run {run['state']}, handoff try {ti['try_number']}, "
                f"logins in its log {len(logins)} ({how})")
    return Outcome(name, expected, observed, _elapsed(start), tuple(c.failures),
                   {"run_id": run_id, "revoked_after_preflight": revoked_after_preflight,
                    "revoked_during_handoff": len(watcher.revoked), "revoker_errors": watcher.errors[:5],
                    "relogin_lines": relogin, "login_lines": logins, "login_refs": login_refs,
                    "revoked_refs": sorted(revoked_refs), "handoff_state_at_sweep": handoff_at_sweep,
                    "handoff_tokens_dead": sum(ref not in live_refs for ref in login_refs),
                    "replaced_but_not_revoked_by_scenario": [r for r in login_refs[:-1]
                                                             if r != "?" and r not in revoked_refs]})


def scenario_credentials_revoked(lab: FaultLab, *, timeout: float = 900) -> Outcome:
    """3b. Tokens revoked and the sanitizer's secret_id destroyed mid-run: no way to log in again."""
    name = "3b. tokens + secret_id revoked mid-run"
    expected = ("clear failure (VaultLoginError naming the connection and the server's reason), no package; "
                "the retry succeeds once the secret_id is restored")
    start, c = time.monotonic(), Checks()
    lab.training(paused=True)
    creds = lab.services.creds.role(SANITIZER)
    approle = lab.root_client.auth.approle
    source = lab.dataset("credentials-revoked")
    run_id = lab.trigger(source)
    lab.wait_task(run_id, "preflight", lambda t: t["state"] == "success", timeout=timeout)
    approle.destroy_secret_id(SANITIZER, creds.secret_id)
    revoked = _revoke_all(lab, SANITIZER)
    restored = False
    try:
        failed = lab.wait_task(run_id, "handoff", lambda t: t["state"] in ("up_for_retry", "failed"),
                               timeout=timeout)
    finally:
        # The same secret_id value again (custom secret_id), so the Airflow connection works as before.
        approle.create_custom_secret_id(SANITIZER, creds.secret_id)
        restored = True
    log = lab.log_of(run_id, "handoff", failed["try_number"])
    errors = _log_lines(log, "VaultLoginError", "login (approle)")
    events_while_failed = lab.stack.asset_events(source_dag_id=SANITIZE_DAG, source_run_id=run_id)
    run = lab.wait_run(run_id, timeout=timeout)
    c.that(errors, "the failed try's log has no VaultLoginError")
    c.that(creds.secret_id not in log, "the secret_id appears in the task log")
    c.that(not events_while_failed, "an Asset event was emitted by the failed try")
    c.that(restored and run["state"] == "success", f"after restoring the secret_id the run ended {run['state']}")
    observed = (f"secret_id destroyed + {len(revoked)} token(s) revoked; handoff try {failed['try_number']} "
                f"{failed['state']}: {_short(errors[0], 200) if errors else '-'}; secret_id restored -> run {run['state']}")
    return Outcome(name, expected, observed, _elapsed(start), tuple(c.failures),
                   {"run_id": run_id, "errors": errors, "revoked": len(revoked)})


def scenario_sigkill_anonymize(lab: FaultLab, *, timeout: float = 900, compare_with: str | None = None) -> Outcome:
    """2. The anonymize task's process SIGKILLed while it writes outputs; compared with a clean run."""
    name = "2. anonymize task SIGKILLed mid-write"
    expected = ("the retry resumes and finishes; outputs, audit and package contents identical to an "
                "uninterrupted run on the same source; no .tmp/.partial left")
    start, c = time.monotonic(), Checks()
    lab.training(paused=True)
    source = lab.dataset("sigkill", n_train=10, n_val=2, real_photos=True)
    conf = {"batch_size": 2}
    killed_id = lab.trigger(source, **conf)
    clean_id = compare_with or lab.trigger(source, **conf)  # concurrently: same source, same output root
    kill = kill_anonymize_mid_write(lab, killed_id, timeout=timeout)
    killed_run = lab.wait_run(killed_id, timeout=timeout)
    clean_run = lab.wait_run(clean_id, timeout=timeout)
    c.that(kill["killed"], f"could not kill the task mid-write: {kill['note']}")
    c.that(killed_run["state"] == "success", f"killed run ended {killed_run['state']}")
    c.that(clean_run["state"] == "success", f"clean run ended {clean_run['state']}")
    tries = lab.tries(killed_id, "anonymize", map_index=0)
    c.that(len(tries) >= 2, "the anonymize task was not retried")
    recorded = _log_lines(lab.log_of(killed_id, "anonymize", tries[0]["try_number"], map_index=0),
                          "terminated by signal") if kill["killed"] else []
    c.that(not kill["killed"] or recorded, "the killed try's log does not record the signal")
    evidence: dict[str, Any] = {"killed_run": killed_id, "clean_run": clean_id, **kill,
                                "anonymize_tries": [t["state"] for t in tries], "kill_recorded": recorded}
    if killed_run["state"] == clean_run["state"] == "success":
        shard = lab.xcom(killed_id, "anonymize", map_index=0)
        evidence["resumed_images"] = shard.get("resumed")
        c.that(shard.get("resumed", 0) > 0, "the retry recomputed everything instead of resuming")
        a, b = lab.layout(killed_id).stage("anonymize"), lab.layout(clean_id).stage("anonymize")
        data_a, data_b = tree(a / "data"), tree(b / "data")
        c.that(data_a and data_a == data_b, "anonymized outputs differ from the uninterrupted run")
        c.that(sha256_file(a / "audit.jsonl") == sha256_file(b / "audit.jsonl"), "audit logs differ")
        ks = lab.key_service(TRAINER)
        pa = _opened_files(lab.package_of(killed_id)["package_uri"], ks)
        pb = _opened_files(lab.package_of(clean_id)["package_uri"], ks)
        c.that(pa and pa == pb, "decrypted package contents differ from the uninterrupted run")
        evidence.update(files_compared=len(data_a), package_files=len(pa))
    leftovers = partial_files(lab.layout(killed_id).root, lab.layout(clean_id).root, lab.packages_root)
    c.that(not leftovers, f"partial files left: {leftovers[:3]}")
    evidence["partial_files"] = leftovers
    observed = (f"killed pid {kill.get('pid')} after {kill.get('audit_lines_at_kill')} of "
                f"{kill.get('images')} audit lines ({kill.get('outputs_at_kill')} outputs on disk); tries "
                f"{evidence['anonymize_tries']}, retry resumed {evidence.get('resumed_images')} image(s); "
                f"{evidence.get('files_compared', 0)} output files + audit + {evidence.get('package_files', 0)} "
                f"package files identical: {not any('differ' in f for f in c.failures)}; partial files: "
                f"{len(leftovers)}")
    return Outcome(name, expected, observed, _elapsed(start), tuple(c.failures), evidence)


def kill_anonymize_mid_write(lab: FaultLab, run_id: str, *, min_lines: int = 2, timeout: float = 600) -> dict:
    """SIGKILL the anonymize task runner of ``run_id`` once ``min_lines`` audit lines are durable and the
    shard is not finished (its ``result.json`` absent): the task is then between writes of its outputs."""
    ti = lab.wait_task(run_id, "anonymize", lambda t: t["state"] == "running", map_index=0, timeout=timeout,
                       poll=0.2)
    shard = lab.layout(run_id).stage("anonymize") / "shards" / "00000-of-00001"
    audit, result = shard / "audit.jsonl", shard / "result.json"
    images = len(_accepted_images(lab, run_id))
    deadline = time.monotonic() + timeout
    proc = None
    while time.monotonic() < deadline:
        if proc is None:
            proc = find_task_process(ti["id"])
        if result.exists():
            return {"killed": False, "note": "the shard finished before it could be killed", "images": images}
        lines = audit.read_bytes().count(b"\n") if audit.exists() else 0
        if proc is not None and lines >= min_lines:
            outputs = len(tree(lab.layout(run_id).stage("anonymize") / "data"))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return {"killed": True, "note": "", "pid": proc.pid, "audit_lines_at_kill": lines,
                    "outputs_at_kill": outputs, "images": images,
                    "result_absent_at_kill": not result.exists()}
        time.sleep(0.01)
    return {"killed": False, "note": f"no running task process / audit lines within {timeout}s", "images": images}


def _accepted_images(lab: FaultLab, run_id: str) -> list[str]:
    up = lab.xcom(run_id, "poisoning")
    return [r.path for r in _manifest_records(up["manifest_path"], up["manifest_digest"])
            if r.kind == "image" and r.accepted]


def _opened_files(package_uri: str, key_service) -> dict[str, str]:
    """Open a package as the trainer does (signature, key unwrap, every file decrypted and hash-checked)."""
    from secure_data.handoff.consumer import open_package

    with open_package(package_uri, key_service) as opened:
        return {p.relative_to(opened.path).as_posix(): sha256_file(p)
                for p in sorted(opened.path.rglob("*")) if p.is_file()}


def scenario_disk_full(lab: FaultLab, *, leave: int = 48 * 1024, timeout: float = 900) -> Outcome:
    """4. The package filesystem has ``leave`` bytes free: the hand-off cannot complete."""
    name = "4. package disk full"
    expected = ("handoff fails with 'No space left on device', no partial package dir, no Asset event for the run, "
                "no training run; after space is freed, clearing the task publishes the package")
    start, c = time.monotonic(), Checks()
    if not lab.small_fs:
        return Outcome(name, expected, "-", 0.0, skipped="cannot mount a small tmpfs here (needs root)")
    lab.training(paused=True)
    root = lab.packages_root
    source = lab.dataset("disk-full")
    before = set(os.listdir(root))
    with filled(root, leave) as free_at_start:
        run_id = lab.trigger(source)
        run = lab.wait_run(run_id, timeout=timeout)
        tries = lab.tries(run_id, "handoff")
        log = lab.log_of(run_id, "handoff", tries[-1]["try_number"]) if tries else ""
        errors = _log_lines(log, "No space left", "ENOSPC", "Errno 28")
        new_entries = sorted(set(os.listdir(root)) - before - {".disk-filler"})
        events = lab.stack.asset_events(source_dag_id=SANITIZE_DAG, source_run_id=run_id)
        report_state = lab.task(run_id, "report")["state"]
    c.that(run["state"] == "failed", f"run ended {run['state']} with a full package disk (handoff "
           f"{tries[-1]['state'] if tries else '?'}, report {report_state})")
    c.that(errors, "the handoff log does not say the disk is full")
    c.that(not new_entries, f"something was left in the package root: {new_entries}")
    c.that(not events, f"{len(events)} Asset event(s) announced a package of the failed run")
    # Recovery: space is back; clear the failed task as an operator would.
    lab.stack.clear_task(SANITIZE_DAG, run_id, ["handoff"])
    lab.wait_task(run_id, "handoff", lambda t: t["state"] not in ("failed", "upstream_failed"), timeout=120,
                  poll=1)
    rerun = lab.wait_run(run_id, timeout=timeout)
    events_after = lab.stack.asset_events(source_dag_id=SANITIZE_DAG, source_run_id=run_id)
    c.that(rerun["state"] == "success" and len(events_after) == 1,
           f"after freeing space: run {rerun['state']}, {len(events_after)} Asset event(s)")
    observed = (f"{free_at_start // 1024} KiB free; handoff tries {[t['state'] for t in tries]} "
                f"(delays {_retry_gaps(tries)} s): {_short(errors[0]) if errors else '-'}; run {run['state']}; "
                f"package-root leftovers {len(new_entries)}, Asset events {len(events)}; after freeing space and "
                f"clearing: run {rerun['state']}, Asset events {len(events_after)}")
    return Outcome(name, expected, observed, _elapsed(start), tuple(c.failures),
                   {"run_id": run_id, "run_state": run["state"], "handoff_states": [t["state"] for t in tries],
                    "report_state": report_state,
                    "errors": errors, "leftovers": new_entries, "events": len(events),
                    "events_after_recovery": len(events_after), "free_bytes": free_at_start})


def scenario_same_source_concurrent(lab: FaultLab, *, timeout: float = 900) -> Outcome:
    """7. Two runs on the same source and the same output root at the same time."""
    name = "7. two runs, same source + output root, at once"
    expected = "both succeed in disjoint run folders; both packages verify, open, and hold the same content"
    start, c = time.monotonic(), Checks()
    lab.training(paused=True)
    source = lab.dataset("same-source")
    a, b = lab.trigger(source), lab.trigger(source)
    runs = [lab.wait_run(r, timeout=timeout) for r in (a, b)]
    c.that(all(r["state"] == "success" for r in runs), f"states {[r['state'] for r in runs]}")
    ra, rb = lab.layout(a).root, lab.layout(b).root
    c.that(ra != rb and not ra.is_relative_to(rb) and not rb.is_relative_to(ra), "run folders overlap")
    evidence: dict[str, Any] = {"runs": [a, b]}
    if all(r["state"] == "success" for r in runs):
        pa, pb = lab.package_of(a), lab.package_of(b)
        c.that(pa["package_id"] != pb["package_id"], "both runs published the same package id")
        ks = lab.key_service(TRAINER)
        fa, fb = _opened_files(pa["package_uri"], ks), _opened_files(pb["package_uri"], ks)
        c.that(fa and fa == fb, "the two packages' decrypted contents differ")
        c.that(tree(ra / "anonymize" / "data") == tree(rb / "anonymize" / "data"), "anonymized outputs differ")
        evidence.update(packages=[pa["package_id"], pb["package_id"]], files=len(fa))
    leftovers = partial_files(ra, rb, lab.packages_root)
    c.that(not leftovers, f"partial files: {leftovers[:3]}")
    observed = (f"runs {[r['state'] for r in runs]}; run folders disjoint: {ra != rb}; packages "
                f"{evidence.get('packages')}, both open and verify, {evidence.get('files', 0)} identical files; "
                f"partial files {len(leftovers)}")
    return Outcome(name, expected, observed, _elapsed(start), tuple(c.failures), evidence)


def scenario_load(lab: FaultLab, *, runs: int = 8, timeout: float = 2400) -> Outcome:
    """6. ``runs`` DAG runs triggered at once on different datasets (LocalExecutor)."""
    name = f"6. {runs} runs at once, different datasets"
    expected = ("all succeed; each run's manifests, outputs and signed package list exactly its own source's "
                "files; run folders disjoint; "
                "sanitizer Vault logins bounded by one per Vault-using task try")
    start, c = time.monotonic(), Checks()
    lab.training(paused=True)
    sources = [lab.dataset(f"load-{i}", seed=1000 + i) for i in range(runs)]
    before = lab.accessors(SANITIZER)
    t0 = time.monotonic()
    run_ids = [lab.trigger(s) for s in sources]
    peak, states = 0, {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = {r["dag_run_id"]: r["state"] for r in lab.stack.runs(SANITIZE_DAG) if r["dag_run_id"] in run_ids}
        peak = max(peak, sum(1 for s in listing.values() if s == "running"))
        states = listing
        if len(listing) == runs and all(s in ("success", "failed") for s in listing.values()):
            break
        time.sleep(2)
    wall = round(time.monotonic() - t0, 1)
    c.that(len(states) == runs and all(s == "success" for s in states.values()), f"states {sorted(states.values())}")
    after = lab.accessors(SANITIZER)
    logins = len(after - before)
    from secure_data.handoff.package import package_path, verify_package

    ks = lab.key_service(TRAINER)
    vault_tries = 0
    own_ok, roots = 0, []
    for run_id, source in zip(run_ids, sources, strict=True):
        tis = lab.stack.task_instances(SANITIZE_DAG, run_id)
        vault_tries += sum(t["try_number"] for t in tis if t["task_id"] in ("preflight", "handoff"))
        layout = lab.layout(run_id)
        roots.append(layout.root)
        if states.get(run_id) != "success":
            continue
        mine = _source_records(source)
        integ = lab.xcom(run_id, "integrity")
        listed = {(r.path, r.sha256) for r in _manifest_records(integ["manifest_path"], integ["manifest_digest"])}
        anon = lab.xcom(run_id, "anonymize_merge")
        anon_records = _manifest_records(anon["manifest_path"], anon["manifest_digest"])
        accepted = {r.path for r in anon_records if r.accepted}
        produced = set(tree(Path(anon["data_root"])))
        inside = all(Path(x["manifest_path"]).is_relative_to(layout.root) for x in (integ, anon))
        # The signed package lists exactly the run's accepted files, with the bytes its own stage wrote.
        verified = verify_package(package_path(lab.package_of(run_id)["package_uri"]), ks)
        packaged = {(f.path, f.sha256) for f in verified.manifest.files}
        ok = listed == mine and {r.path for r in anon_records} == {p for p, _ in mine} and produced == accepted \
            and inside and packaged == {(r.path, r.sha256) for r in anon_records if r.accepted}
        c.that(ok, f"{run_id}: its manifests, outputs or package are not exactly its own source's files")
        own_ok += int(ok)
    disjoint = len(set(roots)) == runs and not any(
        a != b and a.is_relative_to(b) for a in roots for b in roots)
    c.that(disjoint, "run folders are not disjoint")
    c.that(logins <= vault_tries, f"{logins} sanitizer logins for {vault_tries} Vault-using task tries")
    observed = (f"{sum(s == 'success' for s in states.values())}/{runs} succeeded in {wall}s (at most {peak} "
                f"running at once: the DAG's max_active_runs); {own_ok}/{runs} runs' manifests, outputs and "
                f"packages hold exactly their own files; folders disjoint: {disjoint}; sanitizer logins {logins} for {vault_tries} "
                f"Vault-task tries ({logins / runs:.1f} per run)")
    return Outcome(name, expected, observed, _elapsed(start), tuple(c.failures),
                   {"runs": run_ids, "wall_s": wall, "peak_running": peak, "logins": logins,
                    "vault_task_tries": vault_tries})


# ------------------------------------------------------------------------------------------ token helpers


def _revoke_all(lab: FaultLab, role: str) -> list[str]:
    """Revoke every live token of ``role``'s AppRole logins (``auth/token/revoke-accessor``); their accessors."""
    revoked = []
    for accessor in sorted(lab.accessors(role)):
        with contextlib.suppress(Exception):  # expired or revoked meanwhile
            lab.root_client.auth.token.revoke_accessor(accessor)
            revoked.append(accessor)
    return revoked


_TOKEN_REF = re.compile(r"token ref ([0-9a-f]{12}|\?)\)")


class _TokenRevoker:
    """Background thread: revoke the first ``limit`` new tokens of ``role`` as soon as the server lists them.

    Only the first: revoking the replacement token too would test "an admin keeps revoking", not
    "a token died mid-task"."""

    def __init__(self, lab: FaultLab, role: str, known: set[str], poll: float = 0.02, limit: int = 1) -> None:
        import hvac

        # Its own client: hvac clients are not shared across threads here.
        self._client = hvac.Client(url=lab.bao.url, token=lab.bao.root_token)
        self.role = role
        self.seen = set(known)
        self.revoked: list[str] = []
        self.errors: list[str] = []
        self.poll = poll
        self.limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="token-revoker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll) and len(self.revoked) < self.limit:
            try:
                keys = self._client.auth.token.list_accessors()["data"]["keys"]
            except Exception as exc:  # noqa: BLE001 (a transient error: poll again)
                self.errors.append(f"list: {type(exc).__name__}: {exc}")
                continue
            for accessor in keys:
                if accessor in self.seen:
                    continue
                self.seen.add(accessor)
                try:
                    data = self._client.auth.token.lookup_accessor(accessor)["data"]
                except Exception:  # noqa: S112 (gone meanwhile)
                    continue
                if data.get("path") == "auth/approle/login" and (data.get("meta") or {}).get("role_name") == self.role:
                    # Counted as revoked even if the call raises: the server may have revoked it anyway,
                    # and ``limit`` must bound the attempts, not the successes.
                    self.revoked.append(accessor)
                    try:
                        self._client.auth.token.revoke_accessor(accessor)
                    except Exception as exc:  # noqa: BLE001 (recorded: the scenario reports it)
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    if len(self.revoked) >= self.limit:
                        return


ALL_SCENARIOS = ("vault_restart", "vault_sealed", "corrupted_package", "token_revoked", "credentials_revoked", "sigkill_anonymize",
                 "disk_full", "same_source_concurrent", "load")
