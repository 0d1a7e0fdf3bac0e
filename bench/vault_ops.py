"""Vault access cost per task: shared login (SecureVaultHook) vs a login per task (the provider's VaultHook).

    python bench/vault_ops.py                 # 200 repetitions per row
    python bench/vault_ops.py --repeat 500

Starts a real OpenBao dev server on loopback, bootstraps the secure-data roles and measures
(median and p95 milliseconds per call, sanitizer or trainer AppRole):

* ``login``: AppRole login + lookup-self (what one fresh session costs);
* Transit / KV calls on an already logged-in shared session: datakey, sign, verify, decrypt, KV read;
  datakey twice: raw hvac (Vault's cost) and through VaultOps (plus masking the plaintext);
* "task" rows, one per simulated task (a new hook, then one KV read + one sign):
  ``SecureVaultHook`` (shared process session: no login after the first) against the peer,
  the provider's ``VaultHook`` (a new hook per task logs in again; its get_conn() also probes
  the token) doing the same KV read, plus a Transit sign through its hvac client.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def row(name: str, samples: list[float]) -> str:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(0.95 * len(s)))]
    return f"| {name:<46} | {statistics.median(s):8.2f} | {p95:8.2f} | {len(s):5d} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    from secure_data_testkit.airflow_env import airflow_env

    os.environ.update(airflow_env(tempfile.mkdtemp(prefix="bench-vault-")))
    from secure_data.vault.connection import connection_env_for
    from secure_data.vault.ops import VaultOps
    from secure_data.vault.session import VaultSession, reset_shared_sessions
    from secure_data.vault.setup import bootstrap
    from secure_data_testkit.openbao import OpenBaoServer

    rows = []
    with OpenBaoServer() as server:
        result = bootstrap(server.url, server.root_token)
        san, tra = result.sanitizer, result.trainer
        os.environ.update(connection_env_for("sanitizer", result))
        raw = f"{result.dataset_prefix}/raw"
        n = args.repeat

        def login_once():
            s = VaultSession.for_approle(server.url, san.role_id, san.secret_id, keep_alive=False)
            s.facts  # noqa: B018 (login + lookup-self)
            s.close()

        rows.append(row("login (AppRole login + lookup-self)", timed(login_once, n)))

        sops = VaultOps(VaultSession.for_approle(server.url, san.role_id, san.secret_id))
        tops = VaultOps(VaultSession.for_approle(server.url, tra.role_id, tra.secret_id))
        key = sops.generate_data_key(result.data_key)
        sig = sops.sign(result.signing_key, b"m" * 64)
        raw_client = sops.session.client  # same session, no masking: Vault's own cost
        rows.append(row("datakey/plaintext, raw hvac (no masking)", timed(
            lambda: raw_client.secrets.transit.generate_data_key(result.data_key, key_type="plaintext"), n)))
        # Airflow's masker recompiles one regex over all masked values on every add, so this
        # row grows with the number of keys already masked in the process (see BENCHMARKS.md).
        rows.append(row("datakey + mask_secret, keys 1-50 in process", timed(
            lambda: sops.generate_data_key(result.data_key), min(n, 50))))
        rows.append(row("sign 64 B, ed25519 (shared session)", timed(lambda: sops.sign(result.signing_key, b"m" * 64), n)))
        rows.append(row("verify 64 B (shared session, trainer)",
                        timed(lambda: tops.verify(result.signing_key, b"m" * 64, sig), n)))
        rows.append(row("decrypt wrapped key (shared session, trainer)",
                        timed(lambda: tops.decrypt(result.data_key, key.wrapped), n)))
        rows.append(row("KV v2 read (shared session)", timed(lambda: sops.read_kv(raw), n)))

        from airflow.providers.hashicorp.hooks.vault import VaultHook

        from secure_data.vault.hook import SecureVaultHook

        reset_shared_sessions()

        def task_secure():
            hook = SecureVaultHook("vault_sanitizer")
            hook.read_kv(raw)
            hook.sign(result.signing_key, b"manifest")

        def task_provider():
            hook = VaultHook("vault_sanitizer")
            hook.get_secret(raw)
            hook.get_conn().secrets.transit.sign_data(result.signing_key, hash_input="bWFuaWZlc3Q=",
                                                      mount_point=result.transit_mount)

        rows.append(row("task: SecureVaultHook (KV read + sign)", timed(task_secure, n)))
        rows.append(row("task: provider VaultHook, new login (peer)", timed(task_provider, n)))

    print(f"# Vault access benchmark ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)")
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPU, Python {platform.python_version()}, "
          f"OpenBao dev server on loopback (in-memory storage)")
    print(f"command: python bench/vault_ops.py --repeat {args.repeat}")
    print()
    print(f"| {'operation':<46} | {'median ms':>8} | {'p95 ms':>8} | {'n':>5} |")
    print(f"|{'-' * 48}|{'-' * 10}|{'-' * 10}|{'-' * 7}|")
    for line in rows:
        print(line)


if __name__ == "__main__":
    main()
