"""Airflow connections for the secure-data AppRoles (env-var JSON or URI).

The provider's ``vault`` connection reads: host/port = server, **schema = KV mount**
(not http/https: TLS is the ``use_tls`` extra), login = role_id, password = secret_id,
extra ``auth_type`` = "approle". We add ``transit_mount``, ``namespace``, ``verify``.

    export AIRFLOW_CONN_VAULT_SANITIZER='{"conn_type": "vault", "host": "127.0.0.1", ...}'
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from secure_data.vault.setup import AppRoleCredentials, BootstrapResult


def connection_dict_for(role: str | AppRoleCredentials, result: BootstrapResult, url: str | None = None, *,
                        namespace: str | None = None, verify: bool | str | None = None) -> dict[str, Any]:
    """The connection as Airflow's JSON form (contains the secret_id: treat it as a secret)."""
    parts = urlsplit(url or result.url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"Vault URL must be http(s)://host[:port], got {url or result.url!r}")
    creds = role if isinstance(role, AppRoleCredentials) else result.role(role)
    extra: dict[str, Any] = {
        "auth_type": "approle",
        "auth_mount_point": result.approle_mount,
        "use_tls": parts.scheme == "https",
        "kv_engine_version": 2,
        "transit_mount": result.transit_mount,
    }
    if namespace:
        extra["namespace"] = namespace
    if verify is not None:
        extra["verify"] = verify
    return {
        "conn_type": "vault",
        "host": parts.hostname,
        "port": parts.port or (443 if parts.scheme == "https" else 8200),
        "schema": result.kv_mount,
        "login": creds.role_id,
        "password": creds.secret_id,
        "extra": extra,
    }


def connection_json_for(role: str | AppRoleCredentials, result: BootstrapResult, url: str | None = None, **kwargs: Any) -> str:
    """Value for ``AIRFLOW_CONN_<ID>`` (JSON form)."""
    return json.dumps(connection_dict_for(role, result, url, **kwargs))


def connection_uri_for(role: str | AppRoleCredentials, result: BootstrapResult, url: str | None = None, **kwargs: Any) -> str:
    """Value for ``AIRFLOW_CONN_<ID>`` (URI form): vault://role_id:secret_id@host:port/<kv mount>?..."""
    d = connection_dict_for(role, result, url, **kwargs)
    query = urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in d["extra"].items()})
    return (f"vault://{quote(d['login'], safe='')}:{quote(d['password'], safe='')}@{d['host']}:{d['port']}"
            f"/{quote(d['schema'], safe='')}?{query}")


def connection_env_for(role: str | AppRoleCredentials, result: BootstrapResult, url: str | None = None, *,
                       conn_id: str | None = None, **kwargs: Any) -> dict[str, str]:
    """``{"AIRFLOW_CONN_VAULT_<ROLE>": json}`` (conn id ``vault_<role>`` unless given)."""
    name = role.role if isinstance(role, AppRoleCredentials) else role
    conn_id = conn_id or f"vault_{name}".replace("-", "_")
    return {f"AIRFLOW_CONN_{conn_id.upper()}": connection_json_for(role, result, url, **kwargs)}
