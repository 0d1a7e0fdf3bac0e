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

if TYPE_CHECKING:
    from secure_data.vault.hook import SecureVaultHook
    from secure_data.vault.session import TokenFacts

SANITIZER = "sanitizer"
TRAINER = "trainer"
DATA_KEY_TYPES = ("aes256-gcm96",)
SIGNING_KEY_TYPES = ("ed25519",)
_GRANTING = {"create", "update", "sudo", "root"}
_PROBE = b"secure-data preflight probe"


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
    """The checks of ``VaultPreflightOperator`` (callable without a task context); non-secret facts."""
    from secure_data.vault.errors import PreflightError

    if role not in (SANITIZER, TRAINER):
        raise ValueError(f"role must be 'sanitizer' or 'trainer', got {role!r}")
    url = hook.session.url
    facts = hook.token_facts()  # 1. token valid (login happens here, once per process)
    if min_token_ttl and facts.ttl and facts.ttl < min_token_ttl and not facts.renewable:
        raise PreflightError(f"token for {facts.identity} at {url} has {facts.ttl}s left, "
                             f"needs {min_token_ttl}s and is not renewable", url=url)
    versions = {path: hook.read_secret(path).version for path in secret_paths}  # 2. values masked, dropped
    keys = _check_key_types(hook, data_key, signing_key)  # 3.
    _check_capabilities(hook, facts, role, data_key, signing_key)  # 4./5. what the policy says
    _prove_role(hook, facts, role, data_key, signing_key)  # 4./5. what the server does
    if log is not None:
        log.info("Vault preflight passed for %s: %d secret path(s), keys %s", facts.identity, len(versions),
                 ", ".join(f"{k} v{v['latest_version']}" for k, v in keys.items()))
    return {
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


def _check_key_types(hook: SecureVaultHook, data_key: str, signing_key: str) -> dict[str, dict[str, Any]]:
    """Both Transit keys exist with the right type; their versions (non-secret)."""
    from secure_data.vault.errors import TransitKeyTypeError

    keys = {}
    for name, allowed in ((data_key, DATA_KEY_TYPES), (signing_key, SIGNING_KEY_TYPES)):
        info = hook.key_info(name)
        if info.type not in allowed:
            raise TransitKeyTypeError(url=hook.session.url, key=name, expected=" or ".join(allowed),
                                      actual=info.type)
        keys[name] = {"type": info.type, "latest_version": info.latest_version,
                      "min_decryption_version": info.min_decryption_version}
    return keys


def _check_capabilities(hook: SecureVaultHook, facts: TokenFacts, role: str, data_key: str,
                        signing_key: str) -> None:
    """``sys/capabilities-self``: the role may do what it needs and may not do what it must not."""
    from secure_data.vault.errors import PreflightError

    url, t = hook.session.url, hook.transit_mount
    decrypt_path, sign_path = f"{t}/decrypt/{data_key}", f"{t}/sign/{signing_key}"
    datakey_path, verify_path = f"{t}/datakey/plaintext/{data_key}", f"{t}/verify/{signing_key}"
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


def _prove_role(hook: SecureVaultHook, facts: TokenFacts, role: str, data_key: str, signing_key: str) -> None:
    """Prove it by doing it: capabilities-self reads the policy, these calls exercise it."""
    from secure_data.vault.errors import PreflightError, VaultPermissionError

    url = hook.session.url
    if role == SANITIZER:
        probe_key = hook.generate_data_key(data_key)
        signature = hook.sign(signing_key, _PROBE)
        if not hook.verify(signing_key, _PROBE, signature):
            raise PreflightError(f"signature made with '{signing_key}' at {url} does not verify", url=url)
        try:
            hook.decrypt(data_key, probe_key.wrapped)
        except VaultPermissionError:
            return  # expected: the sanitizer cannot turn a wrapped key back into plaintext
        raise PreflightError(f"SAFETY: {facts.identity} decrypted a wrapped data key at {url}; "
                             f"the sanitizer must not be able to", url=url)
    try:
        hook.sign(signing_key, _PROBE)
    except VaultPermissionError:
        return  # expected: a trainer that could sign could forge a sanitized package
    raise PreflightError(f"SAFETY: {facts.identity} signed with '{signing_key}' at {url}; "
                         f"the trainer must not be able to", url=url)
