"""``VaultPreflightOperator``: the Airflow shell around :func:`secure_data.vault.preflight.run_preflight`
(the checks, in order, are described there)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from secure_data.lineage.mixin import OpenLineageMixin
from secure_data.policy.anchors import sanitizer_vault_conn_id, trainer_vault_conn_id
from secure_data.vault.preflight import SANITIZER, TRAINER, run_preflight

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["SANITIZER", "TRAINER", "VaultPreflightOperator", "run_preflight"]


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
