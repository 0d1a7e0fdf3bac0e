"""Clear, distinct errors: unreachable (bounded retries), sealed, denied, missing path/key, bad login, TLS."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from secure_data.vault.errors import (
    TransitKeyNotFoundError,
    VaultLoginError,
    VaultSealedError,
    VaultSecretNotFoundError,
    VaultUnreachableError,
)
from secure_data.vault.ops import VaultOps
from secure_data.vault.session import VaultSession
from secure_data_testkit.openbao import OpenBaoServer, find_bao, free_port


def test_unreachable_after_bounded_retries():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    session = VaultSession.for_approle(url, "role", "secret-id-value", retries=2, backoff=0.05)
    with pytest.raises(VaultUnreachableError) as err:
        VaultOps(session).sign("k", b"x")
    assert err.value.attempts == 3 and url in str(err.value) and "3 attempt" in str(err.value)
    assert "secret-id-value" not in str(err.value)


def test_retries_are_really_made_and_bounded():
    """A listener that accepts and hangs up: it counts how many times the client tried."""
    accepted = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            accepted.append(time.monotonic())
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    try:
        session = VaultSession.for_token(url, "t-not-a-real-token", retries=3, backoff=0.05)
        with pytest.raises(VaultUnreachableError) as err:
            session.facts  # noqa: B018 (lookup-self: a GET, so read errors are retried too)
    finally:
        stop.set()
        thread.join(timeout=2)
        srv.close()
    assert len(accepted) == 4 == err.value.attempts  # 1 try + 3 retries, then stop


def test_sealed_server(vault):
    from secure_data.vault.setup import bootstrap

    with OpenBaoServer() as server:
        result = bootstrap(server.url, server.root_token)
        session = VaultSession.for_approle(server.url, result.sanitizer.role_id, result.sanitizer.secret_id,
                                           retries=1, backoff=0.05)
        ops = VaultOps(session)
        ops.sign(result.signing_key, b"before seal")
        server.seal()
        with pytest.raises(VaultSealedError, match=f"{server.url} is sealed"):
            ops.sign(result.signing_key, b"after seal")  # logged-in session
        fresh = VaultSession.for_approle(server.url, result.trainer.role_id, result.trainer.secret_id,
                                         retries=1, backoff=0.05)
        with pytest.raises(VaultSealedError):
            VaultOps(fresh).verify(result.signing_key, b"x", "vault:v1:AAAA")  # login itself
        session.close()
        fresh.close()


def test_missing_secret_path_names_mount_and_path(openbao, vault):
    ops = VaultOps(VaultSession.for_approle(openbao.url, vault.sanitizer.role_id, vault.sanitizer.secret_id))
    path = f"{vault.dataset_prefix}/does-not-exist"
    with pytest.raises(VaultSecretNotFoundError) as err:
        ops.read_kv(path)
    assert err.value.path == path and f"secret/{path}" in str(err.value) and openbao.url in str(err.value)


def test_deleted_secret_counts_as_missing(openbao, vault, root_client):
    path = f"{vault.dataset_prefix}/soon-deleted"
    root_client.secrets.kv.v2.create_or_update_secret(path=path, secret={"k": "value-123"})
    root_client.secrets.kv.v2.delete_latest_version_of_secret(path=path)
    ops = VaultOps(VaultSession.for_approle(openbao.url, vault.sanitizer.role_id, vault.sanitizer.secret_id))
    with pytest.raises(VaultSecretNotFoundError, match="soon-deleted"):
        ops.read_kv(path)


def test_missing_transit_key(openbao):
    ops = VaultOps(VaultSession.for_token(openbao.url, openbao.root_token))
    for call in (lambda: ops.generate_data_key("no-such-key"), lambda: ops.sign("no-such-key", b"x"),
                 lambda: ops.key_info("no-such-key"), lambda: ops.verify("no-such-key", b"x", "vault:v1:AA"),
                 lambda: ops.decrypt("no-such-key", "vault:v1:AAAA")):
        with pytest.raises(TransitKeyNotFoundError) as err:
            call()
        assert err.value.key == "no-such-key" and "'no-such-key'" in str(err.value)
        assert openbao.url in str(err.value)


def test_wrong_secret_id_is_a_login_error(openbao, vault):
    session = VaultSession.for_approle(openbao.url, vault.sanitizer.role_id, "0000-wrong-secret-id")
    with pytest.raises(VaultLoginError) as err:
        VaultOps(session).sign(vault.signing_key, b"x")
    assert "approle" in str(err.value) and openbao.url in str(err.value)
    assert "0000-wrong-secret-id" not in str(err.value)


def test_tls_verification_settings(tmp_path):
    """A TLS dev server: the default (system CAs) refuses its self-signed cert; its CA bundle is accepted."""
    certs = tmp_path / "certs"
    certs.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [find_bao(), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={certs}",
         f"-dev-listen-address=127.0.0.1:{port}", "-dev-root-token-id=root-tls-test", "-dev-no-store-token"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": tempfile.mkdtemp()},
        start_new_session=True,
    )
    try:
        url = f"https://127.0.0.1:{port}"
        ca = certs / "vault-ca.pem"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                VaultSession.for_token(url, "root-tls-test", verify=str(ca), retries=0).facts  # noqa: B018
                break
            except (VaultUnreachableError, FileNotFoundError, OSError):
                time.sleep(0.2)
        facts = VaultSession.for_token(url, "root-tls-test", verify=str(ca)).facts
        assert facts.policies == ("root",)
        with pytest.raises(VaultUnreachableError, match="TLS verification failed"):
            VaultSession.for_token(url, "root-tls-test", retries=0).facts  # noqa: B018
    finally:
        proc.terminate()
        proc.wait(timeout=10)
