"""``VaultKeyService``: the hand-off's ``KeyService`` implemented with Vault Transit.

Two ways to build it:

* in an Airflow task: ``VaultKeyService.from_conn_id("vault_sanitizer", data_key=..., signing_key=...)``
  (the provider's connection and auth methods; one login per process, shared);
* in core tests / notebooks: ``VaultKeyService.from_client(hvac_client, ...)``,
  ``VaultKeyService.for_approle(url, role_id, secret_id, ...)`` or from a ``VaultSession``.

What it may do is decided by the identity's policy, not by this class: a sanitizer's
key service gets ``VaultPermissionError`` from ``unwrap``; a trainer's from ``sign``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from secure_data.handoff.keyservice import DataKey
from secure_data.vault.ops import VaultOps
from secure_data.vault.setup import DEFAULT_DATA_KEY, DEFAULT_SIGNING_KEY, DEFAULT_TRANSIT_MOUNT

if TYPE_CHECKING:
    import hvac

    from secure_data.vault.session import VaultSession

_TRANSIT_VERSION = re.compile(r"^vault:v(\d+):")  # Transit ciphertexts and signatures


class VaultKeyService:
    """wrap/unwrap/rewrap with the AES data key, sign/verify with the ed25519 key, all in Transit."""

    def __init__(
        self,
        ops: VaultOps,
        *,
        data_key: str = DEFAULT_DATA_KEY,
        signing_key: str = DEFAULT_SIGNING_KEY,
    ) -> None:
        self.ops = ops
        self.data_key = data_key
        self.signing_key = signing_key

    def __repr__(self) -> str:
        return (f"VaultKeyService(url={self.ops.session.url!r}, identity={self.ops.session.identity!r}, "
                f"data_key={self.data_key!r}, signing_key={self.signing_key!r})")

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_session(cls, session: VaultSession, *, data_key: str = DEFAULT_DATA_KEY,
                     signing_key: str = DEFAULT_SIGNING_KEY,
                     transit_mount: str = DEFAULT_TRANSIT_MOUNT) -> VaultKeyService:
        return cls(VaultOps(session, transit_mount=transit_mount), data_key=data_key, signing_key=signing_key)

    @classmethod
    def from_client(cls, client: hvac.Client, *, data_key: str = DEFAULT_DATA_KEY,
                    signing_key: str = DEFAULT_SIGNING_KEY,
                    transit_mount: str = DEFAULT_TRANSIT_MOUNT) -> VaultKeyService:
        """Over an hvac client that already holds a token (it is not renewed or replaced)."""
        from secure_data.vault.session import VaultSession

        return cls.from_session(VaultSession.from_client(client), data_key=data_key, signing_key=signing_key,
                                transit_mount=transit_mount)

    @classmethod
    def for_approle(cls, url: str, role_id: str, secret_id: str, *, data_key: str = DEFAULT_DATA_KEY,
                    signing_key: str = DEFAULT_SIGNING_KEY, transit_mount: str = DEFAULT_TRANSIT_MOUNT,
                    approle_mount: str = "approle", namespace: str | None = None,
                    verify: bool | str = True) -> VaultKeyService:
        """AppRole without Airflow, sharing the process-wide session for this role (one login)."""
        from secure_data.vault.session import VaultSession, session_key, shared_session

        key = session_key(kind="approle", url=url, role_id=role_id, secret_id=secret_id, mount=approle_mount,
                          namespace=namespace, verify=verify)
        session = shared_session(key, lambda: VaultSession.for_approle(
            url, role_id, secret_id, mount=approle_mount, namespace=namespace, verify=verify))
        return cls.from_session(session, data_key=data_key, signing_key=signing_key, transit_mount=transit_mount)

    @classmethod
    def from_conn_id(cls, conn_id: str = "vault_default", *, data_key: str = DEFAULT_DATA_KEY,
                     signing_key: str = DEFAULT_SIGNING_KEY,
                     transit_mount: str | None = None) -> VaultKeyService:
        """From an Airflow connection (through ``SecureVaultHook``; imports Airflow)."""
        from secure_data.vault.hook import SecureVaultHook

        hook = SecureVaultHook(vault_conn_id=conn_id, transit_mount=transit_mount)
        return cls(hook.ops, data_key=data_key, signing_key=signing_key)

    # ---------------------------------------------------------------- KeyService protocol

    def generate_data_key(self) -> DataKey:
        return self.ops.generate_data_key(self.data_key)

    def unwrap(self, wrapped: str) -> bytes:
        return self.ops.decrypt(self.data_key, wrapped)

    def rewrap(self, wrapped: str) -> str:
        return self.ops.rewrap(self.data_key, wrapped)

    def sign(self, message: bytes) -> str:
        return self.ops.sign(self.signing_key, message)

    def verify(self, message: bytes, signature: str) -> bool:
        return self.ops.verify(self.signing_key, message, signature)

    def key_version(self, token: str) -> int | None:
        """Transit ciphertexts and signatures start ``vault:v<N>:``."""
        match = _TRANSIT_VERSION.match(token or "")
        return int(match.group(1)) if match else None
