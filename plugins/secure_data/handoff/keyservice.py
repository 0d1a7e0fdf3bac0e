"""The small key-service interface the hand-off core needs; ``secure_data.vault`` implements it with Transit.

Keeping it an interface means the package format and its tests never depend on
how keys are held, and the plaintext data key never leaves the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, repr=False)
class DataKey:
    """A fresh data key: the plaintext lives only in memory; ``wrapped`` is safe to store."""

    plaintext: bytes  # 32 bytes for AES-256; never log, never persist
    wrapped: str  # the key service's ciphertext of the plaintext (opaque to the hand-off core)
    key_name: str
    key_version: int

    def __repr__(self) -> str:  # keep the plaintext out of tracebacks and logs
        return f"DataKey(key_name={self.key_name!r}, key_version={self.key_version}, wrapped=<{len(self.wrapped)} chars>)"


@runtime_checkable
class KeyService(Protocol):
    """wrap (generate), unwrap, sign, verify and rewrap, as the DESIGN's hand-off core needs them."""

    def generate_data_key(self) -> DataKey:
        """A new 256-bit data key, plaintext plus wrapped form (Transit ``datakey/plaintext``)."""

    def unwrap(self, wrapped: str) -> bytes:
        """Plaintext of a wrapped data key (Transit ``decrypt``): the trainer may, the sanitizer may not."""

    def rewrap(self, wrapped: str) -> str:
        """The same data key wrapped under the newest key version (Transit ``rewrap``); no plaintext."""

    def sign(self, message: bytes) -> str:
        """Signature over ``message`` with the asymmetric signing key (Transit ``sign``)."""

    def verify(self, message: bytes, signature: str) -> bool:
        """True iff ``signature`` is valid for ``message`` under the trusted signing key (Transit ``verify``)."""

    def key_version(self, token: str) -> int | None:
        """The key version a wrapped key or a signature made by this service names (``None``: it names
        none it recognises). The hand-off core never parses the service's formats itself."""
