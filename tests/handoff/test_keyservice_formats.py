"""The hand-off core is opaque to the key service's formats: a service whose ciphertexts and signatures
are not Vault's (``kms|<version>|...``) builds and opens packages as well (before, the core parsed
``vault:v<N>:`` itself and refused such a key)."""

from __future__ import annotations

from pathlib import Path

from secure_data.handoff.consumer import open_package
from secure_data.handoff.keyservice import DataKey, KeyService
from secure_data.handoff.package import build_package, package_path, read_header, sources_from_directory


class OtherFormat:
    """The real Transit service underneath, its tokens re-encoded as ``kms|<version>|<payload>``."""

    def __init__(self, inner: KeyService) -> None:
        self.inner = inner

    @staticmethod
    def _out(token: str) -> str:
        prefix, version, payload = token.split(":", 2)
        assert prefix == "vault" and version.startswith("v")
        return f"kms|{version[1:]}|{payload}"

    @staticmethod
    def _in(token: str) -> str:
        _, version, payload = token.split("|", 2)
        return f"vault:v{version}:{payload}"

    def generate_data_key(self) -> DataKey:
        key = self.inner.generate_data_key()
        return DataKey(key.plaintext, self._out(key.wrapped), key.key_name, key.key_version)

    def unwrap(self, wrapped: str) -> bytes:
        return self.inner.unwrap(self._in(wrapped))

    def rewrap(self, wrapped: str) -> str:
        return self._out(self.inner.rewrap(self._in(wrapped)))

    def sign(self, message: bytes) -> str:
        return self._out(self.inner.sign(message))

    def verify(self, message: bytes, signature: str) -> bool:
        return self.inner.verify(message, self._in(signature))

    def key_version(self, token: str) -> int | None:
        return int(token.split("|")[1]) if token.startswith("kms|") else None


def test_a_key_service_with_its_own_formats_fits_the_hand_off_core(tmp_path, small_dataset, sanitizer_ks,
                                                                    trainer_ks):
    sanitizer, trainer = OtherFormat(sanitizer_ks), OtherFormat(trainer_ks)
    assert isinstance(sanitizer, KeyService)
    info = build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer, name="kms")
    header = read_header(package_path(info.uri))
    assert header.data_key.wrapped.startswith("kms|") and header.signature.startswith("kms|")
    assert info.key_version == header.data_key.key_version >= 1
    assert info.signatures["manifest"]["key_version"] >= 1
    with open_package(info.uri, trainer) as opened:
        files = sorted(p.relative_to(opened.path).as_posix() for p in Path(opened.path).rglob("*") if p.is_file())
        assert files and all((Path(opened.path) / f).read_bytes() == (small_dataset / f).read_bytes()
                             for f in files)
