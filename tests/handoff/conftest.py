"""Hand-off fixtures: the real sanitizer / trainer / keyadmin identities on the session OpenBao."""

from __future__ import annotations

import pytest

from secure_data_testkit.vault_fixtures import bootstrap_test_vault


@pytest.fixture(scope="session")
def vault(openbao):
    """The bootstrapped session server (AppRoles, policies, Transit keys)."""
    return bootstrap_test_vault(openbao)


def _key_service(openbao, vault, role: str, **kwargs):
    from secure_data.vault.keyservice import VaultKeyService

    creds = vault.role(role)
    return VaultKeyService.for_approle(openbao.url, creds.role_id, creds.secret_id, **kwargs)


@pytest.fixture(scope="session")
def sanitizer_ks(openbao, vault):
    return _key_service(openbao, vault, "sanitizer")


@pytest.fixture(scope="session")
def trainer_ks(openbao, vault):
    return _key_service(openbao, vault, "trainer")


@pytest.fixture(scope="session")
def root_client(openbao, vault):
    import hvac

    return hvac.Client(url=openbao.url, token=openbao.root_token)


@pytest.fixture
def package(tmp_path, small_dataset, sanitizer_ks):
    """A package built by the sanitizer from the small dataset: (PackageInfo, source dataset root)."""
    from secure_data.handoff.package import build_package, sources_from_directory

    info = build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer_ks,
                         name="small", upstream={"anonymize": "sha256:" + "0" * 64})
    return info, small_dataset
