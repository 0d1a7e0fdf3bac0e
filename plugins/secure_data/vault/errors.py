"""Clear, distinct failures for everything that can go wrong between a task and Vault.

hvac raises a handful of generic exceptions (``Forbidden`` means both "this token is
dead" and "this policy does not allow that"), so the session maps them to these
classes after checking which case it is. Messages name the address, path, key or
policy, and never a secret value.
"""

from __future__ import annotations

from collections.abc import Sequence


class VaultAccessError(Exception):
    """Base class: a Vault call failed in a way the caller should see, not retry blindly."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class VaultUnreachableError(VaultAccessError):
    """No answer from the server after bounded retries with backoff (refused, DNS, timeout, TLS)."""

    def __init__(self, *, url: str, attempts: int, cause: str) -> None:
        super().__init__(f"Vault at {url} is unreachable after {attempts} attempt(s): {cause}", url=url)
        self.attempts = attempts


class VaultSealedError(VaultAccessError):
    """The server answers but is sealed (HTTP 503): an operator has to unseal it."""

    def __init__(self, *, url: str) -> None:
        super().__init__(f"Vault at {url} is sealed (HTTP 503); unseal it before running the DAG", url=url)


class VaultPermissionError(VaultAccessError):
    """The token is valid but its policies do not allow this operation on this path."""

    def __init__(self, *, url: str, path: str, operation: str, identity: str, policies: Sequence[str]) -> None:
        pols = ", ".join(policies) or "<none>"
        super().__init__(
            f"permission denied: {identity} (policies: {pols}) may not {operation} '{path}' at {url}",
            url=url,
        )
        self.path = path
        self.operation = operation
        self.identity = identity
        self.policies = tuple(policies)


class VaultSecretNotFoundError(VaultAccessError):
    """No (live) secret at this KV v2 path: it was never written, or its latest version is deleted."""

    def __init__(self, *, url: str, mount: str, path: str) -> None:
        super().__init__(f"no secret at '{mount}/{path}' (KV v2) at {url}", url=url)
        self.mount = mount
        self.path = path


class TransitKeyNotFoundError(VaultAccessError):
    """The named Transit key does not exist on this mount."""

    def __init__(self, *, url: str, mount: str, key: str) -> None:
        super().__init__(f"Transit key '{key}' not found on mount '{mount}' at {url}", url=url)
        self.mount = mount
        self.key = key


class TransitKeyTypeError(VaultAccessError):
    """The Transit key exists but has the wrong type (e.g. an AES key where ed25519 is expected)."""

    def __init__(self, *, url: str, key: str, expected: str, actual: str) -> None:
        super().__init__(f"Transit key '{key}' at {url} has type '{actual}', expected '{expected}'", url=url)
        self.key = key
        self.expected = expected
        self.actual = actual


class VaultTokenError(VaultAccessError):
    """The token is expired or revoked and this auth method cannot log in again by itself."""

    def __init__(self, *, url: str, identity: str, reason: str) -> None:
        super().__init__(f"Vault token for {identity} at {url} is not usable: {reason}", url=url)
        self.identity = identity


class VaultLoginError(VaultAccessError):
    """Logging in was refused (wrong/expired secret_id, unknown role, bad credentials)."""

    def __init__(self, *, url: str, auth_type: str, identity: str, reason: str) -> None:
        super().__init__(f"Vault login ({auth_type}) for {identity} at {url} failed: {reason}", url=url)
        self.auth_type = auth_type
        self.identity = identity


class PreflightError(VaultAccessError):
    """The run cannot do its job (or could do more than it should): raised by the preflight."""
