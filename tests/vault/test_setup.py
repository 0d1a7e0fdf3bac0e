"""The policy bundle and bootstrap: idempotent, secret_ids kept out of repr, CLI output 0600."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from secure_data.vault.keyservice import VaultKeyService
from secure_data.vault.setup import ROLES, BootstrapResult, bootstrap, read_result, render_policy


def test_bootstrap_twice_keeps_role_ids_and_both_secret_ids_work(openbao, vault):
    again = bootstrap(openbao.url, openbao.root_token)
    for role in ROLES:
        assert again.role(role).role_id == vault.role(role).role_id
        assert again.role(role).secret_id != vault.role(role).secret_id
    for result in (vault, again):
        ks = VaultKeyService.for_approle(openbao.url, result.sanitizer.role_id, result.sanitizer.secret_id)
        assert ks.verify(b"m", ks.sign(b"m"))


def test_repr_hides_secret_ids(vault):
    text = repr(vault) + str(vault) + repr(vault.roles)
    for creds in vault.roles:
        assert creds.secret_id not in text
        assert creds.role_id in text
    assert BootstrapResult.from_json(vault.to_json()) == vault


def test_explicit_secrets_are_written_and_updated(openbao, root_client):
    path = "secure-data/datasets/explicit-test"
    bootstrap(openbao.url, openbao.root_token, secrets={path: {"k": "v1-value"}})
    bootstrap(openbao.url, openbao.root_token, secrets={path: {"k": "v1-value"}})  # unchanged: no new version
    meta = root_client.secrets.kv.v2.read_secret_metadata(path=path)["data"]
    assert meta["current_version"] == 1
    bootstrap(openbao.url, openbao.root_token, secrets={path: {"k": "v2-value"}})
    got = root_client.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)["data"]
    assert got["data"] == {"k": "v2-value"} and got["metadata"]["version"] == 2


def test_render_policy_rejects_names_that_would_widen_it():
    assert 'path "transit/sign/secure-data-signing"' in render_policy("sanitizer")
    for bad in ("*", 'a" {', "../sys", "key name"):
        with pytest.raises(ValueError, match="unsafe"):
            render_policy("sanitizer", data_key=bad)


def test_cli_writes_0600_json_and_prints_no_secret(openbao, tmp_path):
    token_file = tmp_path / "root.token"
    token_file.write_text(openbao.root_token)
    out = tmp_path / "creds" / "vault.json"
    proc = subprocess.run(
        [sys.executable, "-m", "secure_data.vault.setup", "--url", openbao.url, "--token-file", str(token_file),
         "--out", str(out)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    result = read_result(out)
    summary = json.loads(proc.stdout)
    assert summary["roles"] == list(ROLES)
    for creds in result.roles:
        assert creds.secret_id not in proc.stdout + proc.stderr
    assert openbao.root_token not in proc.stdout + proc.stderr

    rendered = tmp_path / "policies"
    subprocess.run([sys.executable, "-m", "secure_data.vault.setup", "--render-policies", str(rendered)],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert sorted(p.name for p in rendered.iterdir()) == [f"secure-data-{r}.hcl" for r in sorted(ROLES)]
