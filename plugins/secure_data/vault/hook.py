"""``SecureVaultHook``: the official provider's ``VaultHook`` plus Transit, token reuse and clear errors.

The provider parses the ``vault`` connection (host, port, KV mount in *schema*, login /
password, ``auth_type`` and the other extras) and implements every auth method; we
keep all of that and add:

* a process-wide ``VaultSession`` per (connection, credentials): one login per worker
  process per token lifetime, renewal before expiry, login again only when the token
  is gone (see ``session.py``);
* Transit (data key, decrypt, rewrap, sign, verify, rotate, key info) and KV v2 reads
  that raise ``secure_data.vault.errors`` classes and mask every value they return;
* connection extras the provider has no field for: ``namespace``, ``verify`` (bool or CA
  bundle path), ``ca_cert``, ``client_cert``/``client_key``, ``timeout``, ``retries``,
  ``backoff``, ``transit_mount``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.hashicorp.hooks.vault import VaultHook

from secure_data.handoff.keyservice import DataKey
from secure_data.vault.masking import mask_value
from secure_data.vault.ops import KVSecret, TransitKeyInfo, VaultOps
from secure_data.vault.session import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    TokenFacts,
    VaultSession,
    make_http_session,
    session_key,
    shared_session,
)

if TYPE_CHECKING:
    import hvac

# The provider's `_VaultClient` of the first hook for a given identity: later hooks for the
# same identity point at it too, so even the provider's own methods (get_secret, ...) share one login.
_PROVIDER_CLIENTS: dict[str, Any] = {}


def _as_verify(value: Any) -> bool | str:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in {"true", "1", "yes"}:
        return True
    if text.lower() in {"false", "0", "no"}:
        return False
    return text  # a CA bundle path


class SecureVaultHook(VaultHook):
    """VaultHook with Transit, KV v2 reads with clear errors, and one shared login per process.

    :param vault_conn_id: Airflow connection, default ``vault_default``: either the provider's ``vault``
        type or our ``secure_data_vault`` type (same form, listed under this provider).
    :param transit_mount: Transit mount (default: extra ``transit_mount`` or ``transit``).
    :param kwargs: passed to ``VaultHook`` (auth_type, role_id, ...).
    """

    conn_type = "secure_data_vault"
    hook_name = "secure-data Vault (Transit)"

    def __init__(self, vault_conn_id: str = VaultHook.default_conn_name, *, transit_mount: str | None = None,
                 **kwargs: Any) -> None:
        # Builds the provider's _VaultClient; it logs in lazily, so nothing has touched the network yet.
        super().__init__(vault_conn_id=vault_conn_id, **kwargs)
        self.vault_conn_id = vault_conn_id
        extras = self.connection.extra_dejson
        mask_value(self.connection.password)
        vc = self.vault_client

        verify = _as_verify(extras.get("verify", extras.get("ca_cert")))
        cert = None
        if extras.get("client_cert"):
            cert = (extras["client_cert"], extras["client_key"]) if extras.get("client_key") else extras["client_cert"]
        retries = int(extras.get("retries", DEFAULT_RETRIES))
        backoff = float(extras.get("backoff", DEFAULT_BACKOFF))
        timeout = float(extras.get("timeout", DEFAULT_TIMEOUT))
        namespace = extras.get("namespace") or vc.kwargs.get("namespace")
        self.transit_mount = transit_mount or extras.get("transit_mount") or "transit"
        self.kv_mount = vc.mount_point or "secret"

        key = session_key(
            conn_id=vault_conn_id, url=vc.url, auth_type=vc.auth_type, auth_mount=vc.auth_mount_point,
            role_id=vc.role_id, secret=vc.secret_id, token=vc.token, token_path=vc.token_path,
            username=vc.username, namespace=namespace, verify=verify,
        )

        def factory() -> VaultSession:
            # Hand the provider our session (bounded retries + backoff, TLS settings) and
            # the hvac.Client options the connection form has no field for.
            vc.kwargs.update(session=make_http_session(retries=retries, backoff=backoff, verify=verify, cert=cert),
                             verify=verify, timeout=timeout)
            if cert:
                vc.kwargs["cert"] = cert
            if namespace:
                vc.kwargs["namespace"] = namespace

            def login() -> hvac.Client:
                vc._invalidate_client()
                return vc.client  # the provider's auth code for vc.auth_type

            _PROVIDER_CLIENTS[key] = vc
            return VaultSession(url=vc.url, login=login, auth_type=vc.auth_type,
                                identity=f"connection '{vault_conn_id}' ({vc.auth_type})",
                                can_relogin=vc.auth_type != "token", retries=retries,
                                http=vc.kwargs["session"])

        self.session = shared_session(key, factory)
        self.vault_client = _PROVIDER_CLIENTS.get(key, vc)
        self.ops = VaultOps(self.session, kv_mount=self.kv_mount, transit_mount=self.transit_mount)

    def get_conn(self) -> hvac.Client:
        """The shared, authenticated hvac client (renewed or re-logged-in as needed)."""
        return self.session.client

    # ------------------------------------------------------------------------ token

    def token_facts(self) -> TokenFacts:
        """Non-secret: identity, policies, remaining TTL, renewable."""
        return self.session.facts

    def capabilities(self, paths: Sequence[str]) -> dict[str, list[str]]:
        return self.session.capabilities(list(paths))

    # ------------------------------------------------------------------------ KV v2

    def read_secret(self, path: str, *, version: int | None = None) -> KVSecret:
        """KV v2 secret at ``path`` on the connection's mount; raises VaultSecretNotFoundError if absent."""
        return self.ops.read_secret(path, version=version)

    def read_kv(self, path: str, *, version: int | None = None) -> dict[str, Any]:
        return self.ops.read_kv(path, version=version)

    # ------------------------------------------------------------------------ Transit

    def key_info(self, key: str) -> TransitKeyInfo:
        return self.ops.key_info(key)

    def generate_data_key(self, key: str, *, bits: int = 256) -> DataKey:
        return self.ops.generate_data_key(key, bits=bits)

    def decrypt(self, key: str, wrapped: str) -> bytes:
        return self.ops.decrypt(key, wrapped)

    def rewrap(self, key: str, wrapped: str) -> str:
        return self.ops.rewrap(key, wrapped)

    def sign(self, key: str, message: bytes, *, key_version: int | None = None) -> str:
        return self.ops.sign(key, message, key_version=key_version)

    def verify(self, key: str, message: bytes, signature: str) -> bool:
        return self.ops.verify(key, message, signature)

    def rotate(self, key: str) -> int:
        return self.ops.rotate(key)

    def test_connection(self) -> tuple[bool, str]:
        try:
            facts = self.token_facts()
        except Exception as exc:  # the UI shows the message
            return False, str(exc)
        return True, f"authenticated as {facts.identity}; policies {', '.join(facts.policies)}; ttl {facts.ttl}s"
