"""Vault preflight: prove at the start of a run that the run can do its job, and no more.

Checks, in order (the first failure raises a ``secure_data.vault.errors`` exception
that names the address, path, key or policy):

1. the token is valid (login or lookup-self) and, if asked, has enough TTL left;
2. every KV v2 secret path the run will read exists (values are masked and dropped);
3. the Transit keys exist with the right type;
4. the identity can do what its role needs, proven by doing it on a probe
   (sanitizer: create a data key, sign + verify; trainer: verify) and by
   ``sys/capabilities-self``;
5. safety check: it can NOT do what its role must not (sanitizer: decrypt, proven by a
   real decrypt attempt that must be denied; trainer: sign, create data keys).

Returns only non-secret facts: identity, policies, token TTL, secret paths with their
versions, key names with types and versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from secure_data.lineage.mixin import OpenLineageMixin
from secure_data.policy.anchors import sanitizer_vault_conn_id, trainer_vault_conn_id

if TYPE_CHECKING:
    from airflow.sdk import Context

    from secure_data.vault.hook import SecureVaultHook

SANITIZER = "sanitizer"
TRAINER = "trainer"
DATA_KEY_TYPES = ("aes256-gcm96",)
SIGNING_KEY_TYPES = ("ed25519",)
_GRANTING = {"create", "update", "sudo", "root"}
_PROBE = b"secure-data preflight probe"


class VaultPreflightOperator(OpenLineageMixin, BaseOperator):
    """Fail fast, before any data is touched, if Vault access is missing or too broad.

    :param vault_conn_id: the identity's Airflow connection (``vault`` conn type, AppRole); default the
        deployment's connection of ``role`` (``SECURE_DATA_SANITIZER_VAULT_CONN_ID`` / ``..._TRAINER_...``).
    :param role: ``"sanitizer"`` (default) or ``"trainer"``: which permissions to expect and forbid.
    :param secret_paths: KV v2 paths (relative to the connection's mount) the run will read.
    :param data_key: Transit key that wraps data keys (type aes256-gcm96).
    :param signing_key: Transit key that signs manifests (type ed25519).
    :param transit_mount: Transit mount (default: connection extra ``transit_mount`` or ``transit``).
    :param min_token_ttl: fail if a non-renewable token has fewer seconds left than this.
    """

    template_fields: Sequence[str] = ("vault_conn_id", "secret_paths", "data_key", "signing_key")
    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        vault_conn_id: str | None = None,
        role: str = SANITIZER,
        secret_paths: Sequence[str] = (),
        data_key: str = "secure-data-datakey",
        signing_key: str = "secure-data-signing",
        transit_mount: str | None = None,
        min_token_ttl: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if role not in (SANITIZER, TRAINER):
            raise ValueError(f"role must be 'sanitizer' or 'trainer', got {role!r}")
        # Default: the deployment's connection of that identity (as every operator defaults).
        self.vault_conn_id = vault_conn_id or (sanitizer_vault_conn_id() if role == SANITIZER else trainer_vault_conn_id())
        self.role = role
        # A Jinja string is kept as is (rendered to a list with render_template_as_native_obj).
        self.secret_paths = secret_paths if isinstance(secret_paths, str) else list(secret_paths)
        self.data_key = data_key
        self.signing_key = signing_key
        self.transit_mount = transit_mount
        self.min_token_ttl = min_token_ttl

    def execute(self, context: Context) -> dict[str, Any]:
        from secure_data.vault.hook import SecureVaultHook

        paths = self.secret_paths
        if isinstance(paths, str):  # rendered without native objects: "" or one path
            paths = [paths] if paths.strip() not in ("", "[]", "None") else []
        hook = SecureVaultHook(self.vault_conn_id, transit_mount=self.transit_mount)
        return self.lineage_result(run_preflight(
            hook, role=self.role, secret_paths=list(paths), data_key=self.data_key, signing_key=self.signing_key,
            min_token_ttl=self.min_token_ttl, log=self.log))


def run_preflight(
    hook: SecureVaultHook,
    *,
    role: str,
    secret_paths: Sequence[str],
    data_key: str,
    signing_key: str,
    min_token_ttl: int = 0,
    log: Any = None,
) -> dict[str, Any]:
    """The checks of ``VaultPreflightOperator`` (callable without a task context)."""
    from secure_data.vault.errors import PreflightError, TransitKeyTypeError, VaultPermissionError

    url = hook.session.url
    facts = hook.token_facts()  # 1. token valid (login happens here, once per process)
    if min_token_ttl and facts.ttl and facts.ttl < min_token_ttl and not facts.renewable:
        raise PreflightError(f"token for {facts.identity} at {url} has {facts.ttl}s left, "
                             f"needs {min_token_ttl}s and is not renewable", url=url)

    versions = {path: hook.read_secret(path).version for path in secret_paths}  # 2. values masked, dropped

    keys = {}  # 3. keys exist with the right type
    for name, allowed in ((data_key, DATA_KEY_TYPES), (signing_key, SIGNING_KEY_TYPES)):
        info = hook.key_info(name)
        if info.type not in allowed:
            raise TransitKeyTypeError(url=url, key=name, expected=" or ".join(allowed), actual=info.type)
        keys[name] = {"type": info.type, "latest_version": info.latest_version,
                      "min_decryption_version": info.min_decryption_version}

    t = hook.transit_mount
    decrypt_path = f"{t}/decrypt/{data_key}"
    sign_path = f"{t}/sign/{signing_key}"
    datakey_path = f"{t}/datakey/plaintext/{data_key}"
    verify_path = f"{t}/verify/{signing_key}"
    caps = hook.capabilities([decrypt_path, sign_path, datakey_path, verify_path])

    def allowed(path: str) -> bool:
        return bool(_GRANTING & set(caps[path]))

    if role == SANITIZER:
        must, must_not = (datakey_path, sign_path, verify_path), (decrypt_path,)
    else:
        must, must_not = (decrypt_path, verify_path), (sign_path, datakey_path)
    for path in must:
        if not allowed(path):
            raise PreflightError(f"{facts.identity} (policies: {', '.join(facts.policies)}) lacks 'update' on "
                                 f"'{path}' at {url}, which the {role} needs", url=url)
    for path in must_not:
        if allowed(path):
            raise PreflightError(f"SAFETY: {facts.identity} (policies: {', '.join(facts.policies)}) may update "
                                 f"'{path}' at {url}; the {role} must not. Fix the policy before running.",
                                 url=url)

    # 4./5. Prove it by doing it: capabilities-self reads the policy, these calls exercise it.
    if role == SANITIZER:
        probe_key = hook.generate_data_key(data_key)
        signature = hook.sign(signing_key, _PROBE)
        if not hook.verify(signing_key, _PROBE, signature):
            raise PreflightError(f"signature made with '{signing_key}' at {url} does not verify", url=url)
        try:
            hook.decrypt(data_key, probe_key.wrapped)
        except VaultPermissionError:
            pass  # expected: the sanitizer cannot turn a wrapped key back into plaintext
        else:
            raise PreflightError(f"SAFETY: {facts.identity} decrypted a wrapped data key at {url}; "
                                 f"the sanitizer must not be able to", url=url)
    else:
        try:
            hook.sign(signing_key, _PROBE)
        except VaultPermissionError:
            pass  # expected: a trainer that could sign could forge a sanitized package
        else:
            raise PreflightError(f"SAFETY: {facts.identity} signed with '{signing_key}' at {url}; "
                                 f"the trainer must not be able to", url=url)

    result = {
        "vault_url": url,
        "role": role,
        "identity": facts.identity,
        "policies": list(facts.policies),
        "token_ttl": facts.ttl,
        "token_renewable": facts.renewable,
        "secret_paths": versions,
        "transit_keys": keys,
        "can_decrypt": role == TRAINER,
        "can_sign": role == SANITIZER,
    }
    if log is not None:
        log.info("Vault preflight passed for %s: %d secret path(s), keys %s", facts.identity, len(versions),
                 ", ".join(f"{k} v{v['latest_version']}" for k, v in keys.items()))
    return result
