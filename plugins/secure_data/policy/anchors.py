"""Trust anchors: which Vault identity, which keys and which policies a worker trusts.

They come from the worker's deployment configuration (environment set by whoever deploys the
worker), never from run parameters: a triggerer who could name the Vault connection, the signing
key or the allowed policies could make a trainer trust a package it must not.
"""

from __future__ import annotations

import os

SANITIZER_CONN_ENV = "SECURE_DATA_SANITIZER_VAULT_CONN_ID"
TRAINER_CONN_ENV = "SECURE_DATA_TRAINER_VAULT_CONN_ID"
DATA_KEY_ENV = "SECURE_DATA_DATA_KEY"
SIGNING_KEY_ENV = "SECURE_DATA_SIGNING_KEY"
TRAINER_POLICIES_ENV = "SECURE_DATA_TRAINER_POLICY_DIGESTS"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def sanitizer_vault_conn_id() -> str:
    """Connection id of the sanitizer AppRole (``SECURE_DATA_SANITIZER_VAULT_CONN_ID``, default ``vault_sanitizer``)."""
    return _env(SANITIZER_CONN_ENV, "vault_sanitizer")


def trainer_vault_conn_id() -> str:
    """Connection id of the trainer AppRole (``SECURE_DATA_TRAINER_VAULT_CONN_ID``, default ``vault_trainer``)."""
    return _env(TRAINER_CONN_ENV, "vault_trainer")


def data_key_name() -> str:
    return _env(DATA_KEY_ENV, "secure-data-datakey")


def signing_key_name() -> str:
    """Transit key whose signatures a trainer accepts (``SECURE_DATA_SIGNING_KEY``)."""
    return _env(SIGNING_KEY_ENV, "secure-data-signing")


def trainer_policy_digests() -> frozenset[str]:
    """Deployment policy digests a trainer accepts: ``SECURE_DATA_TRAINER_POLICY_DIGESTS`` (comma or
    space separated ``sha256:…``), else the digest of the trainer's own deployment policy."""
    configured = os.environ.get(TRAINER_POLICIES_ENV, "").replace(",", " ").split()
    if configured:
        return frozenset(configured)
    from secure_data.policy import load_policy

    return frozenset({load_policy().digest})
