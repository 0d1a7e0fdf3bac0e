"""Object-storage credentials for operators: a KV v2 secret in Vault -> fsspec storage options."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

# KV field names (as ``secure_data.vault.setup`` writes storage credentials) -> fsspec/s3fs storage options.
_KV_TO_STORAGE_OPTION = {
    "access_key_id": "key",
    "secret_access_key": "secret",
    "session_token": "token",
}


def storage_options_from_kv(secret: Mapping[str, Any]) -> dict[str, Any]:
    """Map a KV secret to fsspec storage options (known S3-style names are renamed, others pass through)."""
    return {_KV_TO_STORAGE_OPTION.get(k, k): v for k, v in secret.items()}


def optional(value: Any) -> str | None:
    """A templated optional value: "", "None" and "null" (non-native rendering of None) mean absent."""
    if value is None or str(value).strip() in ("", "None", "null"):
        return None
    return str(value)


def storage_options_from_vault(vault_conn_id: str, secret_path: str | None,
                               log: logging.Logger | Any) -> dict[str, Any]:
    """Read ``secret_path`` (KV v2) with the task's Vault identity; every value is masked first.

    Returns ``{}`` when no path is given. Only the path and the field names are logged.
    """
    path = optional(secret_path)
    if path is None:
        return {}
    from secure_data.vault.hook import SecureVaultHook
    from secure_data.vault.masking import mask_value

    secret = SecureVaultHook(vault_conn_id=vault_conn_id).read_kv(path)
    mask_value(secret)  # the hook masks too; this keeps the guarantee local and explicit
    log.info("Storage credentials read from Vault path %s (fields: %s)", path, ", ".join(sorted(secret)))
    return storage_options_from_kv(secret)
