"""Transit and KV v2 operations over a ``VaultSession``: what the provider's VaultHook lacks.

Every value read from Vault (KV data, plaintext data keys) is passed to the masker
before it is returned, so nothing the caller logs afterwards can show it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from secure_data.handoff.keyservice import DataKey
from secure_data.vault.errors import (
    TransitKeyNotFoundError,
    VaultAccessError,
    VaultSecretNotFoundError,
)
from secure_data.vault.masking import mask_bytes, mask_value

if TYPE_CHECKING:
    from secure_data.vault.session import VaultSession


@dataclass(frozen=True)
class TransitKeyInfo:
    """Non-secret metadata of a Transit key (safe for XCom and the preflight report)."""

    name: str
    type: str
    latest_version: int
    min_decryption_version: int
    min_encryption_version: int
    supports_encryption: bool
    supports_decryption: bool
    supports_signing: bool
    exportable: bool


@dataclass(frozen=True)
class KVSecret:
    """A KV v2 secret: ``data`` is secret (already masked), ``version`` is not."""

    path: str
    version: int
    data: dict[str, Any]

    def __repr__(self) -> str:  # keep values out of tracebacks
        return f"KVSecret(path={self.path!r}, version={self.version}, keys={sorted(self.data)})"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class VaultOps:
    """Transit (datakey, decrypt, rewrap, sign, verify, rotate, key info) and KV v2 reads with clear errors."""

    def __init__(self, session: VaultSession, *, kv_mount: str = "secret", transit_mount: str = "transit") -> None:
        self.session = session
        self.kv_mount = kv_mount
        self.transit_mount = transit_mount

    # ---------------------------------------------------------------------------- KV v2

    def read_secret(self, path: str, *, version: int | None = None) -> KVSecret:
        """Read a KV v2 secret; every value is masked before it is returned."""
        path = path.strip("/")
        full = f"{self.kv_mount}/data/{path}"

        def not_found(exc: Exception) -> VaultAccessError | None:
            return VaultSecretNotFoundError(url=self.session.url, mount=self.kv_mount, path=path)

        resp = self.session.call(
            lambda c: c.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.kv_mount, version=version, raise_on_deleted_version=True),
            path=full, op="read", not_found=not_found,
        )
        data = (resp.get("data") or {}).get("data")
        if data is None:  # soft-deleted or destroyed latest version
            raise VaultSecretNotFoundError(url=self.session.url, mount=self.kv_mount, path=path)
        mask_value(data)
        meta = resp["data"].get("metadata") or {}
        return KVSecret(path=path, version=int(meta.get("version") or 0), data=dict(data))

    def read_kv(self, path: str, *, version: int | None = None) -> dict[str, Any]:
        return self.read_secret(path, version=version).data

    # ---------------------------------------------------------------------------- Transit

    def _key_missing(self, key: str):
        def mapper(exc: Exception) -> VaultAccessError | None:
            text = str(exc).lower()
            if "key not found" in text or type(exc).__name__ == "InvalidPath":
                return TransitKeyNotFoundError(url=self.session.url, mount=self.transit_mount, key=key)
            return None

        return mapper

    def key_info(self, key: str) -> TransitKeyInfo:
        resp = self.session.call(
            lambda c: c.secrets.transit.read_key(key, mount_point=self.transit_mount),
            path=f"{self.transit_mount}/keys/{key}", op="read", not_found=self._key_missing(key),
        )
        d = resp["data"]
        return TransitKeyInfo(
            name=d["name"], type=d["type"], latest_version=int(d["latest_version"]),
            min_decryption_version=int(d.get("min_decryption_version") or 0),
            min_encryption_version=int(d.get("min_encryption_version") or 0),
            supports_encryption=bool(d.get("supports_encryption")),
            supports_decryption=bool(d.get("supports_decryption")),
            supports_signing=bool(d.get("supports_signing")),
            exportable=bool(d.get("exportable")),
        )

    def generate_data_key(self, key: str, *, bits: int = 256) -> DataKey:
        """A fresh data key from Transit: plaintext (masked, memory only) + wrapped under ``key``."""
        resp = self.session.call(
            lambda c: c.secrets.transit.generate_data_key(key, key_type="plaintext", bits=bits,
                                                          mount_point=self.transit_mount),
            path=f"{self.transit_mount}/datakey/plaintext/{key}", op="update",
            not_found=self._key_missing(key),
        )
        d = resp["data"]
        mask_value(d["plaintext"])
        plaintext = base64.b64decode(d["plaintext"])
        mask_bytes(plaintext)
        return DataKey(plaintext=plaintext, wrapped=d["ciphertext"], key_name=key,
                       key_version=int(d.get("key_version") or _version_of(d["ciphertext"])))

    def decrypt(self, key: str, wrapped: str) -> bytes:
        """Plaintext of a wrapped data key (masked before it is returned)."""
        resp = self.session.call(
            lambda c: c.secrets.transit.decrypt_data(key, ciphertext=wrapped, mount_point=self.transit_mount),
            path=f"{self.transit_mount}/decrypt/{key}", op="update", not_found=self._key_missing(key),
        )
        b64 = resp["data"]["plaintext"]
        mask_value(b64)
        plaintext = base64.b64decode(b64)
        mask_bytes(plaintext)
        return plaintext

    def rewrap(self, key: str, wrapped: str) -> str:
        """The same data key wrapped under the newest version of ``key``; no plaintext leaves Vault."""
        resp = self.session.call(
            lambda c: c.secrets.transit.rewrap_data(key, ciphertext=wrapped, mount_point=self.transit_mount),
            path=f"{self.transit_mount}/rewrap/{key}", op="update", not_found=self._key_missing(key),
        )
        return resp["data"]["ciphertext"]

    def sign(self, key: str, message: bytes, *, key_version: int | None = None) -> str:
        """Transit signature ("vault:vN:...") over ``message`` with the asymmetric key ``key``."""
        resp = self.session.call(
            lambda c: c.secrets.transit.sign_data(key, hash_input=_b64(message), key_version=key_version,
                                                  mount_point=self.transit_mount),
            path=f"{self.transit_mount}/sign/{key}", op="update", not_found=self._key_missing(key),
        )
        return resp["data"]["signature"]

    def verify(self, key: str, message: bytes, signature: str) -> bool:
        """True iff ``signature`` is a valid signature of ``message`` by ``key``.

        A malformed signature is simply not valid (False); a missing key, a denied
        policy or an unreachable server raise, so "invalid" never hides "could not check".
        """
        missing = self._key_missing(key)

        def mapper(exc: Exception) -> VaultAccessError | None:
            found = missing(exc)
            if found is not None:
                return found
            return _MalformedSignature(url=self.session.url)

        try:
            resp = self.session.call(
                lambda c: c.secrets.transit.verify_signed_data(key, hash_input=_b64(message),
                                                               signature=signature,
                                                               mount_point=self.transit_mount),
                path=f"{self.transit_mount}/verify/{key}", op="update", not_found=mapper,
            )
        except _MalformedSignature:
            return False
        return bool(resp["data"]["valid"])

    def rotate(self, key: str) -> int:
        """Rotate ``key`` (keyadmin only); returns the new latest version."""
        self.session.call(
            lambda c: c.secrets.transit.rotate_key(key, mount_point=self.transit_mount),
            path=f"{self.transit_mount}/keys/{key}/rotate", op="update", not_found=self._key_missing(key),
        )
        return self.key_info(key).latest_version


class _MalformedSignature(VaultAccessError):
    def __init__(self, *, url: str) -> None:
        super().__init__("malformed signature", url=url)


def _version_of(wrapped: str) -> int:
    # "vault:v3:..." -> 3
    parts = wrapped.split(":")
    if len(parts) >= 3 and parts[1].startswith("v") and parts[1][1:].isdigit():
        return int(parts[1][1:])
    return 0
