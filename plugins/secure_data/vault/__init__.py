"""Vault / OpenBao access for secure-data, built on the hashicorp provider's VaultHook.

Entry points (imported from their modules, so importing this package stays cheap):

* ``secure_data.vault.hook.SecureVaultHook``: provider VaultHook + Transit + shared login
* ``secure_data.vault.keyservice.VaultKeyService``: the hand-off's KeyService over Transit
* ``secure_data.vault.session.VaultSession``: token reuse / renewal / error mapping
* ``secure_data.vault.setup.bootstrap``: policies, AppRoles, keys (also ``python -m secure_data.vault.setup``)
* ``secure_data.vault.connection.connection_uri_for``: Airflow connection for a role
* ``secure_data.vault.errors``: one exception class per failure

See docs/vault.md.
"""
