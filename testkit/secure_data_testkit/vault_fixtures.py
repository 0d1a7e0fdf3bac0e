"""A bootstrapped OpenBao for tests in any area (the hand-off, the DAG tests, the demo).

    from secure_data_testkit.vault_fixtures import bootstrap_test_vault
    result = bootstrap_test_vault(openbao)          # session-cached per server
    ks = VaultKeyService.for_approle(openbao.url, result.sanitizer.role_id, result.sanitizer.secret_id)
"""

from __future__ import annotations

import threading
from typing import Any

from secure_data.vault.setup import BootstrapResult, bootstrap

_CACHE: dict[tuple[str, str], BootstrapResult] = {}
_LOCK = threading.Lock()


def bootstrap_test_vault(openbao_server: Any, **kwargs: Any) -> BootstrapResult:
    """Run ``bootstrap`` once per (server, root token, kwargs) and cache the result for the session."""
    key = (openbao_server.url, openbao_server.root_token + repr(sorted(kwargs.items())))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = bootstrap(openbao_server.url, openbao_server.root_token, **kwargs)
        return _CACHE[key]


def vault_connection_env(openbao_server: Any, role: str, *, conn_id: str | None = None) -> dict[str, str]:
    """``{"AIRFLOW_CONN_VAULT_<ROLE>": json}`` for a role of the bootstrapped test server."""
    from secure_data.vault.connection import connection_env_for

    return connection_env_for(role, bootstrap_test_vault(openbao_server), conn_id=conn_id)


def accessors_of(root_client: Any, role_name: str) -> set[str]:
    """Server-side evidence of logins: accessors of live tokens issued by AppRole login for ``role_name``."""
    out = set()
    for accessor in root_client.auth.token.list_accessors()["data"]["keys"]:
        try:
            data = root_client.auth.token.lookup_accessor(accessor)["data"]
        except Exception:  # noqa: S112 (revoked/expired between list and lookup: not live, not counted)
            continue
        if data.get("path") == "auth/approle/login" and (data.get("meta") or {}).get("role_name") == role_name:
            out.add(accessor)
    return out


def logins_on_server(root_client: Any, role_name: str) -> int:
    """How many live AppRole-login tokens the server holds for ``role_name``."""
    return len(accessors_of(root_client, role_name))
