"""One authenticated Vault client per identity per process, with its token kept alive.

Why this exists: the provider's ``_VaultClient`` logs in lazily and caches the client
*per hook instance*, and on any 403 it logs in again and retries, which turns a
policy denial into a second login and a generic "Authentication Error". We want:

* one login per worker process per token lifetime, shared by every hook, operator and
  key service in the process (``shared_session``);
* renewable tokens renewed *before* they expire (a background keeper thread, plus a
  cheap check before each call), so a long GPU task does not lose its token;
* a new login only when the token is gone (expired locally, or the server says so);
* a 403 told apart: a dead token (``lookup-self`` fails too) versus a live token whose
  policy does not allow the path -> ``VaultPermissionError`` naming path and policies;
* bounded retries with exponential backoff, then ``VaultUnreachableError``; HTTP 503 ->
  ``VaultSealedError``.

Logging in is delegated to a callable; ``SecureVaultHook`` passes the provider's own
auth code (every auth method of the connection form), tests pass plain AppRole/token.
Nothing here imports Airflow except the masker, lazily.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from secure_data.vault.errors import (
    VaultAccessError,
    VaultLoginError,
    VaultPermissionError,
    VaultSealedError,
    VaultTokenError,
    VaultUnreachableError,
)
from secure_data.vault.masking import mask_value

if TYPE_CHECKING:
    import hvac
    import requests

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.2  # seconds; urllib3 doubles it per retry: 0.2, 0.4, 0.8 -> ~1.4 s worst case
DEFAULT_TIMEOUT = 30.0
EXPIRY_SKEW = 2.0  # treat a token as gone this many seconds before the server does
RENEW_FRACTION = 2 / 3  # renew when two thirds of the TTL have passed (as Vault Agent does)


def make_http_session(
    *,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    verify: bool | str = True,
    cert: str | tuple[str, str] | None = None,
) -> requests.Session:
    """A requests session with bounded retries: connection errors and 502/503/504 (idempotent calls)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(502, 503, 504),
        raise_on_status=False,  # hand the last 503 to hvac so it becomes VaultDown -> VaultSealedError
    )
    http = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    http.verify = verify
    if cert:
        http.cert = cert
    return http


@dataclass(frozen=True)
class TokenFacts:
    """Non-secret facts about the current token (safe for logs and XCom)."""

    identity: str
    policies: tuple[str, ...]
    ttl: int  # seconds left at the last lookup/renewal; 0 = never expires (root/dev tokens)
    renewable: bool
    role_name: str | None


class VaultSession:
    """An hvac client plus its token lifecycle. Thread-safe; share it per process via ``shared_session``."""

    def __init__(
        self,
        *,
        url: str,
        login: Callable[[], hvac.Client],
        identity: str,
        auth_type: str,
        can_relogin: bool,
        retries: int = DEFAULT_RETRIES,
        keep_alive: bool = True,
        http: requests.Session | None = None,
    ) -> None:
        self.url = url
        self.identity = identity
        self.auth_type = auth_type
        self.can_relogin = can_relogin
        self.retries = retries
        self.keep_alive = keep_alive
        self.logins = 0  # client-side counter; tests also count server-side (token accessors)
        self.renewals = 0
        self._login_fn = login
        self._http = http
        self._client: hvac.Client | None = None
        self._lock = threading.RLock()
        self._facts: TokenFacts | None = None
        self._server_expiry: float | None = None  # time.monotonic() when the server drops the token
        self._expires_at: float | None = None  # our deadline, a little earlier; None = no expiry
        self._renew_at: float | None = None
        self._renew_increment = 0
        self._login_ref = "?"  # token_ref() of the current token's accessor (logged with each login)
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()

    # ----------------------------------------------------------------- construction helpers

    @classmethod
    def for_approle(
        cls,
        url: str,
        role_id: str,
        secret_id: str,
        *,
        mount: str = "approle",
        namespace: str | None = None,
        verify: bool | str = True,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        timeout: float = DEFAULT_TIMEOUT,
        keep_alive: bool = True,
    ) -> VaultSession:
        """AppRole login with plain hvac (no Airflow connection): tests, notebooks, the demo."""
        import hvac

        mask_value(secret_id)
        http = make_http_session(retries=retries, backoff=backoff, verify=verify)

        def login() -> hvac.Client:
            client = hvac.Client(url=url, namespace=namespace, session=http, timeout=timeout, verify=verify)
            client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=mount)
            return client

        return cls(url=url, login=login, identity=f"AppRole (mount {mount!r})", auth_type="approle",
                    can_relogin=True, retries=retries, keep_alive=keep_alive, http=http)

    @classmethod
    def for_token(
        cls,
        url: str,
        token: str,
        *,
        namespace: str | None = None,
        verify: bool | str = True,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        timeout: float = DEFAULT_TIMEOUT,
        keep_alive: bool = True,
    ) -> VaultSession:
        """A fixed token: renewed if renewable, but once it is gone there is nothing to log in with."""
        import hvac

        mask_value(token)
        http = make_http_session(retries=retries, backoff=backoff, verify=verify)

        def login() -> hvac.Client:
            return hvac.Client(url=url, token=token, namespace=namespace, session=http, timeout=timeout,
                               verify=verify)

        return cls(url=url, login=login, identity="token", auth_type="token", can_relogin=False,
                   retries=retries, keep_alive=keep_alive, http=http)

    @classmethod
    def from_client(cls, client: hvac.Client, *, identity: str = "token", keep_alive: bool = False) -> VaultSession:
        """Wrap an hvac client that already holds a token (core tests)."""
        return cls(url=client.url, login=lambda: client, identity=identity, auth_type="token",
                   can_relogin=False, keep_alive=keep_alive, retries=0)

    # ----------------------------------------------------------------------- token lifecycle

    @property
    def facts(self) -> TokenFacts:
        with self._lock:
            self._ensure()
            assert self._facts is not None
            remaining = 0
            if self._server_expiry is not None:
                remaining = max(0, int(self._server_expiry - time.monotonic()))
            return TokenFacts(identity=self._facts.identity, policies=self._facts.policies, ttl=remaining,
                              renewable=self._facts.renewable, role_name=self._facts.role_name)

    @property
    def client(self) -> hvac.Client:
        """The authenticated client (logs in on first use, renews or logs in again as needed)."""
        with self._lock:
            self._ensure()
            assert self._client is not None
            return self._client

    def _ensure(self) -> None:
        if self._client is None:
            self._login()
            return
        now = time.monotonic()
        if self._expires_at is not None and now >= self._expires_at:
            if not self.can_relogin:
                raise VaultTokenError(url=self.url, identity=self.identity, reason="token TTL has run out")
            log.info("Vault token for %s has expired; logging in again", self.identity)
            self._login()
        elif self._renew_at is not None and now >= self._renew_at:
            self._renew()

    def _login(self) -> None:
        import hvac.exceptions

        self._client = None
        try:
            client = self._login_fn()
        except VaultAccessError:
            raise
        except hvac.exceptions.VaultDown as exc:
            raise VaultSealedError(url=self.url) from exc
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise VaultLoginError(url=self.url, auth_type=self.auth_type, identity=self.identity,
                                  reason=_server_reason(exc)) from exc
        except Exception as exc:
            mapped = _map_transport(exc, url=self.url, attempts=self.retries + 1)
            if mapped is not None:
                raise mapped from exc
            if isinstance(exc, hvac.exceptions.VaultError):
                raise VaultLoginError(url=self.url, auth_type=self.auth_type, identity=self.identity,
                                      reason=_server_reason(exc)) from exc
            raise
        if not client.token:
            raise VaultLoginError(url=self.url, auth_type=self.auth_type, identity=self.identity,
                                  reason="the auth method returned no token")
        mask_value(client.token)
        self.logins += 1
        self._client = client
        self._load_token_facts(client)
        log.info("Vault login #%d for %s (ttl %ss, token ref %s)", self.logins, self.identity,
                 self._facts.ttl if self._facts else "?", self._login_ref)
        self._start_keeper()

    def _load_token_facts(self, client: hvac.Client) -> None:
        import hvac.exceptions

        self._login_ref = "?"  # until this token's own lookup names it: never the previous token's ref
        try:
            data = client.auth.token.lookup_self()["data"]
        except hvac.exceptions.Forbidden as exc:
            if self.auth_type != "token":
                # The auth method just issued this token, so it is alive; its policy lacks
                # lookup-self (token_no_default_policy). Work without TTL facts: no renewal,
                # log in again when the server rejects it.
                log.warning("Vault token for %s cannot look itself up (no 'default' policy?); "
                            "renewal disabled", self.identity)
                self._facts = TokenFacts(identity=self.identity, policies=(), ttl=0, renewable=False,
                                         role_name=None)
                self._set_deadlines(0, False, increment=0)
                return
            self._client = None
            raise VaultTokenError(url=self.url, identity=self.identity,
                                  reason="token is expired, revoked or invalid (lookup-self denied)") from exc
        except Exception as exc:
            self._token_call_failed(exc)  # raises, except at the max TTL
            return None
        self._login_ref = token_ref(data.get("accessor") or "")
        role_name = (data.get("meta") or {}).get("role_name")
        if role_name and self.auth_type == "approle":
            self.identity = f"AppRole '{role_name}'"
        ttl = int(data.get("ttl") or 0)
        renewable = bool(data.get("renewable"))
        self._facts = TokenFacts(identity=self.identity, policies=tuple(data.get("policies") or ()), ttl=ttl,
                                 renewable=renewable, role_name=role_name)
        self._set_deadlines(ttl, renewable, increment=int(data.get("creation_ttl") or ttl))

    def _token_call_failed(self, exc: Exception) -> None:
        """lookup-self / renew-self failed other than Forbidden: a sealed server and transport errors
        become our errors; a token renewed right up to its max TTL just stops renewing (returns), and
        the next call after expiry logs in again."""
        import hvac.exceptions

        if isinstance(exc, hvac.exceptions.VaultDown):
            raise VaultSealedError(url=self.url) from exc
        if isinstance(exc, hvac.exceptions.InternalServerError):
            if "max TTL" not in str(exc):
                raise exc
            self._renew_at = None
            log.info("Vault token for %s is at its max TTL; a new login follows expiry", self.identity)
            return
        mapped = _map_transport(exc, url=self.url, attempts=self.retries + 1)
        if mapped is None:
            raise exc
        raise mapped from exc

    def _set_deadlines(self, ttl: int, renewable: bool, *, increment: int) -> None:
        now = time.monotonic()
        if ttl <= 0:
            self._server_expiry = self._expires_at = self._renew_at = None
            return
        self._server_expiry = now + ttl
        # Our deadline is a little before the server's, and always after the renewal point.
        self._expires_at = now + ttl - min(EXPIRY_SKEW, ttl * 0.1)
        self._renew_increment = increment
        self._renew_at = now + ttl * RENEW_FRACTION if renewable else None

    def _renew(self) -> None:
        import hvac.exceptions

        assert self._client is not None
        try:
            resp = self._client.auth.token.renew_self(increment=self._renew_increment or None)
        except hvac.exceptions.Forbidden:
            # The server no longer knows the token (revoked, or expired before we got here).
            if not self.can_relogin:
                raise VaultTokenError(url=self.url, identity=self.identity,
                                      reason="token was revoked or expired (renew-self denied)") from None
            log.info("Vault token for %s is gone; logging in again", self.identity)
            self._login()
            return
        except Exception as exc:
            self._token_call_failed(exc)  # raises, except at the max TTL
            return None
        lease = int(resp["auth"]["lease_duration"])
        self.renewals += 1
        # Capped by the token's max TTL: renewing further only shrinks the lease, so stop
        # and log in again once it is really gone.
        capped = lease < self._renew_increment
        self._set_deadlines(lease, renewable=not capped, increment=self._renew_increment)
        log.info("Vault token for %s renewed (ttl %ss%s)", self.identity, lease, ", max TTL reached" if capped else "")

    # --------------------------------------------------------------- background keeper

    def _start_keeper(self) -> None:
        if not self.keep_alive or self._renew_at is None:
            return
        if self._keeper is not None and self._keeper.is_alive():
            return
        self._stop.clear()
        self._keeper = threading.Thread(target=self._keep, name="secure-data-vault-keeper", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        while True:
            with self._lock:
                renew_at = self._renew_at
            wait = 30.0 if renew_at is None else max(0.05, renew_at - time.monotonic())
            if self._stop.wait(wait):
                return
            with self._lock:
                if self._client is None or self._renew_at is None or time.monotonic() < self._renew_at:
                    continue
                try:
                    self._renew()
                except Exception as exc:  # noqa: BLE001 - a keeper must never die: the next real call raises properly
                    log.warning("Vault token keeper for %s: %s: %s", self.identity, type(exc).__name__, exc)
                    self._stop.wait(1.0)

    def close(self) -> None:
        """Stop the keeper thread and drop the client (the token stays valid until its TTL)."""
        self._stop.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)
        self._keeper = None
        with self._lock:
            self._client = None
        if self._http is not None:
            self._http.close()

    def _after_fork(self) -> None:
        # A forked child shares the parent's sockets; drop them. The token stays usable,
        # the keeper thread did not survive the fork and restarts on the next login/renew.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._keeper = None
        if self._http is not None:
            for adapter in self._http.adapters.values():
                adapter.poolmanager.clear()

    # ------------------------------------------------------------------------- calls

    def call(
        self,
        operation: Callable[[hvac.Client], T],
        *,
        path: str,
        op: str,
        not_found: Callable[[Exception], VaultAccessError | None] | None = None,
    ) -> T:
        """Run one request with error mapping; log in again once if the token turned out to be gone.

        ``path`` and ``op`` (e.g. "read", "update") name the request in errors. ``not_found``
        turns an InvalidPath/InvalidRequest into a domain error (or returns None to pass it on).
        """
        import hvac.exceptions

        client = self.client
        try:
            return self._invoke(client, operation, path=path, not_found=not_found)
        except hvac.exceptions.Forbidden:
            if self._token_alive(client):
                raise self._permission_error(path, op) from None
        # The token is gone (revoked or expired server-side before our local deadline).
        with self._lock:
            if not self.can_relogin:
                raise VaultTokenError(url=self.url, identity=self.identity,
                                      reason=f"token expired or was revoked (while calling '{path}')")
            if self._client is not None and self._client is not client:
                # Another thread saw the same rejection and has logged in again already: one
                # re-login per dead token, not one per request that was in flight with it.
                client = self._client
            else:
                log.info("Vault token for %s was rejected (token ref %s); logging in again", self.identity,
                         self._login_ref)
                self._login()
                client = self._client
        try:
            return self._invoke(client, operation, path=path, not_found=not_found)
        except hvac.exceptions.Forbidden:
            raise self._permission_error(path, op) from None

    def _invoke(self, client: hvac.Client, operation: Callable[[hvac.Client], T], *, path: str,
                not_found: Callable[[Exception], VaultAccessError | None] | None) -> T:
        import hvac.exceptions

        try:
            return operation(client)
        except hvac.exceptions.Forbidden:
            raise
        except hvac.exceptions.VaultDown as exc:
            raise VaultSealedError(url=self.url) from exc
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest) as exc:
            mapped = not_found(exc) if not_found else None
            if mapped is not None:
                raise mapped from exc
            raise VaultAccessError(f"Vault rejected the request for '{path}' at {self.url}: "
                                   f"{_server_reason(exc)}", url=self.url) from exc
        except hvac.exceptions.VaultError as exc:
            raise VaultAccessError(f"Vault error for '{path}' at {self.url}: {_server_reason(exc)}",
                                   url=self.url) from exc
        except Exception as exc:
            mapped = _map_transport(exc, url=self.url, attempts=self.retries + 1)
            if mapped is None:
                raise
            raise mapped from exc

    def _token_alive(self, client: hvac.Client) -> bool:
        import hvac.exceptions

        try:
            client.auth.token.lookup_self()
        except hvac.exceptions.Forbidden:
            return False
        except Exception as exc:
            self._token_call_failed(exc)  # raises, except at the max TTL
            return None
        return True

    def _permission_error(self, path: str, op: str) -> VaultPermissionError:
        policies = self._facts.policies if self._facts else ()
        return VaultPermissionError(url=self.url, path=path, operation=op, identity=self.identity,
                                    policies=policies)

    def capabilities(self, paths: list[str]) -> dict[str, list[str]]:
        """What this token may do on each path (``sys/capabilities-self``): non-destructive policy proof."""
        resp = self.call(lambda c: c.adapter.post("/v1/sys/capabilities-self", json={"paths": paths}),
                         path="sys/capabilities-self", op="update")
        data = resp.get("data", resp)
        return {p: list(data.get(p, [])) for p in paths}


def token_ref(accessor: str) -> str:
    """A log-safe reference to a token: the first 12 hex digits of SHA-256 of its *accessor*.

    Neither the token nor its accessor is logged (an accessor lets a privileged caller look up or
    revoke the token; Vault's own audit log HMACs it). An operator with ``auth/token/accessors`` can
    compute the same reference server-side and tell which login a log line was, and whether the token
    a task logged in again for was really revoked."""
    import hashlib

    return hashlib.sha256(accessor.encode()).hexdigest()[:12] if accessor else "?"


def _server_reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return "; ".join(str(e).strip() for e in errors)
    return str(exc).split(", on ")[0].strip() or type(exc).__name__


def _map_transport(exc: Exception, *, url: str, attempts: int) -> VaultAccessError | None:
    """requests/urllib3 connection failures -> VaultUnreachableError; anything else -> None."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return VaultUnreachableError(url=url, attempts=attempts, cause=f"TLS verification failed: {exc}")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        cause = type(exc).__name__
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if reason is not None:
            cause = f"{cause}: {reason}"
        return VaultUnreachableError(url=url, attempts=attempts, cause=cause)
    return None


# ------------------------------------------------------------------ per-process registry

_SESSIONS: dict[str, VaultSession] = {}
_REGISTRY_LOCK = threading.Lock()


def shared_session(key: str, factory: Callable[[], VaultSession]) -> VaultSession:
    """The process-wide session for ``key`` (a fingerprint of url + identity), created once."""
    with _REGISTRY_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = factory()
            _SESSIONS[key] = session
        return session


def shared_sessions() -> dict[str, VaultSession]:
    with _REGISTRY_LOCK:
        return dict(_SESSIONS)


def reset_shared_sessions() -> None:
    """Close and forget every shared session (tests; a process that wants a clean slate)."""
    with _REGISTRY_LOCK:
        sessions = list(_SESSIONS.values())
        _SESSIONS.clear()
    for session in sessions:
        session.close()


def _after_fork_in_child() -> None:
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for session in _SESSIONS.values():
        session._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def session_key(**parts: Any) -> str:
    """A fingerprint for the registry: credentials are hashed, never kept as dict keys in clear."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
