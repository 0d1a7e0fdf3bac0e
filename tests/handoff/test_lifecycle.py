"""Key lifecycle against a real OpenBao: rewrap after rotation, and crypto-shredding.

These tests rotate, restrict and delete Transit keys, so they get their own server
(bootstrapped with the same AppRoles and policies) instead of the session one.
"""

from __future__ import annotations

import shutil

import pytest

from secure_data.handoff.consumer import open_package
from secure_data.handoff.lifecycle import rewrap_all, rewrap_package
from secure_data.handoff.package import (
    HEADER_FILE,
    PackageKeyError,
    build_package,
    package_path,
    read_header,
    sources_from_directory,
)
from secure_data.vault.errors import TransitKeyNotFoundError
from secure_data_testkit.openbao import OpenBaoServer
from secure_data_testkit.vault_fixtures import bootstrap_test_vault


@pytest.fixture(scope="module")
def server():
    with OpenBaoServer() as srv:
        yield srv


def _identities(server):
    from secure_data.vault.keyservice import VaultKeyService

    result = bootstrap_test_vault(server)

    def ks(role):
        creds = result.role(role)
        return VaultKeyService.for_approle(server.url, creds.role_id, creds.secret_id)

    return result, ks("sanitizer"), ks("trainer"), ks("keyadmin")


@pytest.fixture(scope="module")
def identities(server):
    return _identities(server)


def _read_all(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_rewrap_moves_the_key_to_the_newest_version_without_touching_data(server, identities, small_dataset,
                                                                           tmp_path):
    import hvac

    result, sanitizer, trainer, keyadmin = identities
    info = build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer, name="rot")
    root = package_path(info.uri)
    before = _read_all(root)
    old_header = (root / HEADER_FILE).read_bytes()
    assert info.key_version == read_header(root).data_key.key_version

    new_version = keyadmin.ops.rotate(result.data_key)  # the keyadmin identity rotates, then rewraps
    outcome = rewrap_package(info.uri, keyadmin)
    assert (outcome.old_version, outcome.new_version) == (info.key_version, new_version) and outcome.changed
    after = _read_all(root)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {HEADER_FILE}, "rewrap must only rewrite the header"
    assert read_header(root).data_key.key_version == new_version

    # Retire the old key version: the rewrapped package still opens, a copy with the old header does not.
    root_client = hvac.Client(url=server.url, token=server.root_token)
    root_client.secrets.transit.update_key_configuration(result.data_key, min_decryption_version=new_version)
    with open_package(info.uri, trainer, expected_manifest_digest=info.manifest_digest) as pkg:
        assert (pkg.path / "data.yaml").read_bytes() == (small_dataset / "data.yaml").read_bytes()
    stale = tmp_path / "stale" / info.package_id
    shutil.copytree(root, stale)
    (stale / HEADER_FILE).write_bytes(old_header)
    with pytest.raises(PackageKeyError, match=f"v{info.key_version}"), open_package(stale, trainer):
        pass
    # rewrap_all walks a packages root; a second pass is a no-op version-wise
    assert [r.changed for r in rewrap_all(tmp_path / "packages", keyadmin)] == [False]


def test_trainer_cannot_rewrap(identities, small_dataset, tmp_path):
    _, sanitizer, trainer, _ = identities
    info = build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer, name="rw")
    header = (package_path(info.uri) / HEADER_FILE).read_bytes()
    with pytest.raises(PackageKeyError, match="cannot rewrap"):
        rewrap_package(info.uri, trainer)
    assert (package_path(info.uri) / HEADER_FILE).read_bytes() == header


def test_deleting_the_transit_key_crypto_shreds_every_package(small_dataset, tmp_path):
    import hvac

    # Its own server: the test deletes the pipeline's data key.
    with OpenBaoServer() as server:
        result, sanitizer, trainer, _ = _identities(server)
        packages = [build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer,
                                  name=f"s{i}") for i in range(2)]
        for info in packages:  # readable before
            with open_package(info.uri, trainer) as pkg:
                assert (pkg.path / "data.yaml").exists()

        root_client = hvac.Client(url=server.url, token=server.root_token)
        root_client.secrets.transit.update_key_configuration(result.data_key, deletion_allowed=True)
        root_client.secrets.transit.delete_key(result.data_key)

        for info in packages:  # ciphertext and signature intact, but no key can ever decrypt it again
            assert (package_path(info.uri) / "data" / "data.yaml.enc").exists()
            with pytest.raises(PackageKeyError, match=result.data_key) as excinfo, \
                    open_package(info.uri, trainer):
                pass
            assert isinstance(excinfo.value.__cause__, TransitKeyNotFoundError)
