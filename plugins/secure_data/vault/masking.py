"""Register every value read from Vault with Airflow's secrets masker before anything can log it.

Airflow 3.3 exposes ``airflow.sdk.log.mask_secret``: it masks in this process and,
inside a running task, tells the supervisor (which writes the task log) as well.

``mask_secret(dict)`` only masks values under *sensitive-looking* key names
("password", "secret", ...), so a KV secret like ``{"endpoint": ..., "bucket": ...}``
would slip through: we walk containers ourselves and register every leaf value.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any


def _mask_one(value: str) -> None:
    from airflow.sdk.log import mask_secret

    mask_secret(value)


def mask_value(value: Any) -> None:
    """Mask ``value`` and every leaf inside it (dict values, list items, numbers as text)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, Mapping):
        for item in value.values():
            mask_value(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            mask_value(item)
    elif isinstance(value, bytes | bytearray):
        mask_bytes(bytes(value))
    elif isinstance(value, str):
        if value:
            _mask_one(value)
    else:
        _mask_one(str(value))


def mask_bytes(raw: bytes) -> None:
    """Mask the forms a binary secret takes when printed: base64 (Vault's wire form), hex and repr."""
    if not raw:
        return
    _mask_one(base64.b64encode(raw).decode("ascii"))
    _mask_one(raw.hex())
    _mask_one(repr(raw)[2:-1])  # b'...' body, as an f-string or %r would show it
