"""Token reuse and lifecycle, counted on the server (live AppRole-login token accessors)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest

from secure_data.vault.connection import connection_env_for
from secure_data.vault.errors import VaultTokenError
from secure_data.vault.keyservice import VaultKeyService
from secure_data.vault.ops import VaultOps
from secure_data.vault.session import VaultSession, shared_sessions, token_ref
from secure_data_testkit.vault_fixtures import accessors_of, logins_on_server


def test_many_hooks_in_one_process_share_one_login(openbao, vault, root_client, fresh_role, monkeypatch,
                                                  airflow_home):
    creds = fresh_role("sanitizer")
    monkeypatch.setenv(*next(iter(connection_env_for(creds, replace(vault, roles=(creds,)),
                                                     conn_id="vault_reuse").items())))
    n = 6
    for i in range(n):  # what N operator executions in one worker process do
        ks = VaultKeyService.from_conn_id("vault_reuse", data_key=vault.data_key, signing_key=vault.signing_key)
        assert ks.verify(b"m%d" % i, ks.sign(b"m%d" % i))
        ks.generate_data_key()

    assert logins_on_server(root_client, creds.role) == 1
    (session,) = shared_sessions().values()
    assert session.logins == 1


def test_renewable_token_is_renewed_before_it_expires(openbao, root_client, fresh_role):
    # TTLs leave seconds of slack so a loaded 2-core CI machine cannot turn this into a race.
    creds = fresh_role("sanitizer", token_ttl="5s", token_max_ttl="120s")
    session = VaultSession.for_approle(openbao.url, creds.role_id, creds.secret_id)
    ops = VaultOps(session)
    ops.sign("secure-data-signing", b"start")
    (accessor,) = accessors_of(root_client, creds.role)

    time.sleep(11)  # a "long task": no Vault calls, over twice the 5 s TTL; the keeper renews meanwhile

    # Still known to the server (an expired token is revoked and its accessor lookup fails).
    assert root_client.auth.token.lookup_accessor(accessor)["data"]["accessor"] == accessor
    ops.sign("secure-data-signing", b"end")
    assert session.logins == 1 and session.renewals >= 2
    assert accessors_of(root_client, creds.role) == {accessor}
    session.close()


def test_logs_in_again_when_max_ttl_is_reached(openbao, root_client, fresh_role):
    creds = fresh_role("sanitizer", token_ttl="3s", token_max_ttl="4s")
    session = VaultSession.for_approle(openbao.url, creds.role_id, creds.secret_id)
    ops = VaultOps(session)
    ops.sign("secure-data-signing", b"a")
    first = accessors_of(root_client, creds.role)
    time.sleep(5.5)  # well past the 4 s hard cap: renewing cannot help any more
    ops.sign("secure-data-signing", b"b")
    assert session.logins == 2
    assert len(accessors_of(root_client, creds.role) - first) == 1
    session.close()


def test_revoked_approle_token_triggers_one_new_login(openbao, root_client, fresh_role, caplog):
    creds = fresh_role("sanitizer")
    session = VaultSession.for_approle(openbao.url, creds.role_id, creds.secret_id)
    ops = VaultOps(session)
    with caplog.at_level(logging.INFO, logger="secure_data.vault.session"):
        ops.generate_data_key("secure-data-datakey")
        (old,) = accessors_of(root_client, creds.role)
        root_client.auth.token.revoke_accessor(old)

        ops.generate_data_key("secure-data-datakey")  # transparently logs in again
    new = accessors_of(root_client, creds.role)
    assert session.logins == 2 and len(new) == 1 and old not in new
    # The log says which token each login got and which one was rejected, by a reference an operator
    # can compute from the server's accessors, never by the accessor itself.
    (now,) = new
    lines = [r.getMessage() for r in caplog.records]
    logins = [ln for ln in lines if ln.startswith("Vault login #")]
    assert len(logins) == 2, lines
    assert logins[0].startswith("Vault login #1 ") and logins[0].endswith(f", token ref {token_ref(old)})")
    assert logins[1].startswith("Vault login #2 ") and logins[1].endswith(f", token ref {token_ref(now)})")
    assert [ln for ln in lines if "was rejected" in ln] == [
        f"Vault token for AppRole '{creds.role}' was rejected (token ref {token_ref(old)}); logging in again"]
    assert not any(old in ln or now in ln for ln in caplog.text.splitlines())
    session.close()


def test_requests_in_flight_when_the_token_dies_share_one_new_login(openbao, root_client, fresh_role):
    # Several threads (the handoff encrypts with a pool) all hold the token when it is revoked: each
    # request is rejected, yet one new login serves them all (it was one login per request: the
    # fault-injection run saw 3 logins in one handoff for one revoked token).
    import threading

    creds = fresh_role("sanitizer")
    session = VaultSession.for_approle(openbao.url, creds.role_id, creds.secret_id)
    VaultOps(session).sign("secure-data-signing", b"warm")
    (old,) = accessors_of(root_client, creds.role)
    root_client.auth.token.revoke_accessor(old)

    n = 6
    gate = threading.Barrier(n, timeout=30)
    first_try = threading.local()
    results: list[str] = []
    errors: list[BaseException] = []

    def sign(client):
        if not getattr(first_try, "done", False):
            first_try.done = True
            gate.wait()  # every thread holds the revoked token's client before any request leaves
        return client.secrets.transit.sign_data("secure-data-signing", hash_input="YQ==")

    def worker():
        try:
            results.append(session.call(sign, path="transit/sign/secure-data-signing", op="update")
                           ["data"]["signature"])
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == n
    new = accessors_of(root_client, creds.role)
    assert session.logins == 2 and len(new) == 1 and old not in new
    session.close()


def test_revoked_static_token_is_a_clear_error(openbao, root_client):
    token = root_client.auth.token.create(policies=["secure-data-sanitizer"], ttl="1h")["auth"]["client_token"]
    session = VaultSession.for_token(openbao.url, token)
    ops = VaultOps(session)
    ops.sign("secure-data-signing", b"ok")
    root_client.auth.token.revoke(token)
    with pytest.raises(VaultTokenError) as err:
        ops.sign("secure-data-signing", b"after revoke")
    assert openbao.url in str(err.value) and "revoked" in str(err.value)
    assert token not in str(err.value)


def test_expired_static_token_is_a_clear_error(openbao, root_client):
    created = root_client.auth.token.create(policies=["secure-data-sanitizer"], ttl="4s", renewable=False)
    token, accessor = created["auth"]["client_token"], created["auth"]["accessor"]
    session = VaultSession.for_token(openbao.url, token)
    VaultOps(session).sign("secure-data-signing", b"ok")
    # Wait until the server itself has expired the token (its accessor disappears), not a fixed guess.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            root_client.auth.token.lookup_accessor(accessor)
        except Exception:  # noqa: BLE001 - hvac raises InvalidRequest/Forbidden once it is gone
            break
        time.sleep(0.25)
    else:
        pytest.fail("the 4 s token never expired on the server")
    with pytest.raises(VaultTokenError, match="expired|TTL"):
        VaultOps(session).sign("secure-data-signing", b"late")
    # A brand-new session with the dead token fails at login with the same class.
    with pytest.raises(VaultTokenError, match=openbao.url):
        VaultOps(VaultSession.for_token(openbao.url, token)).sign("secure-data-signing", b"late")


def test_token_auth_through_the_airflow_connection(openbao, root_client, monkeypatch, airflow_home):
    import json

    from secure_data.vault.hook import SecureVaultHook

    token = root_client.auth.token.create(policies=["secure-data-trainer"], ttl="1h")["auth"]["client_token"]
    host, port = openbao.url.removeprefix("http://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_TOKEN_TEST", json.dumps({
        "conn_type": "vault", "host": host, "port": int(port), "schema": "secret", "password": token,
        "extra": {"auth_type": "token", "use_tls": False}}))
    hook = SecureVaultHook("vault_token_test")
    facts = hook.token_facts()
    assert "secure-data-trainer" in facts.policies and facts.renewable and 0 < facts.ttl <= 3600
    assert token not in repr(facts)
