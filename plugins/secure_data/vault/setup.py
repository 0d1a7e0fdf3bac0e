"""Bootstrap a Vault/OpenBao server for secure-data: mounts, keys, policies, AppRoles, demo secrets.

Used by the demo, the tests and an operator setting up a real server (with a root or
admin token, once). Idempotent: running it again re-writes the policies and role
settings, keeps existing keys and secrets, and issues a fresh secret_id per role
(earlier secret_ids stay valid until their TTL).

CLI (the demo uses it)::

    python -m secure_data.vault.setup --url http://127.0.0.1:8200 --token-file root.token --out creds.json
    python -m secure_data.vault.setup --render-policies out/policies   # rendered HCL, for review
    # The sanitizer and trainer AppRoles as Airflow connections (vault_sanitizer, vault_trainer), from the
    # bootstrap just run or from an earlier --out file (no token needed then):
    python -m secure_data.vault.setup ... --out creds.json --emit-airflow-connections conns.json
    python -m secure_data.vault.setup --creds creds.json --emit-airflow-connections conns.json
    airflow connections import conns.json          # or: a secrets backend; or conns.env for docker env-files

``--out`` and the emitted connections hold the secret_ids, so they are written atomically with mode 0600;
nothing secret is printed.
This module talks to Vault through hvac only; it does not import Airflow.
"""

from __future__ import annotations

import argparse
import json
import secrets as _secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

POLICY_DIR = Path(__file__).resolve().parent / "policies"

SANITIZER = "sanitizer"
TRAINER = "trainer"
KEYADMIN = "keyadmin"
ROLES = (SANITIZER, TRAINER, KEYADMIN)
POLICY_PREFIX = "secure-data-"

DEFAULT_KV_MOUNT = "secret"
DEFAULT_TRANSIT_MOUNT = "transit"
DEFAULT_APPROLE_MOUNT = "approle"
DEFAULT_DATA_KEY = "secure-data-datakey"
DEFAULT_SIGNING_KEY = "secure-data-signing"
DATA_KEY_TYPE = "aes256-gcm96"
SIGNING_KEY_TYPE = "ed25519"
# ECDSA key for the OpenSSF model_signing signature and the provenance statement (secure_data.handoff.attest).
DEFAULT_ATTESTATION_KEY = "secure-data-attestation"
ATTESTATION_KEY_TYPE = "ecdsa-p256"
DEFAULT_DATASET_PREFIX = "secure-data/datasets"
DEFAULT_TRAINING_PREFIX = "secure-data/training"
# Login lifetimes (Vault duration strings). Named without "token" so the secret linter stays quiet.
DEFAULT_LOGIN_TTL = "1h"  # renewed by the worker before it runs out
DEFAULT_LOGIN_MAX_TTL = "4h"  # hard cap: then the worker logs in again
DEFAULT_CREDENTIAL_TTL = "0"  # secret_id lifetime; 0 = until revoked (rotate by re-running setup)
SERVICE_KIND = "service"  # renewable, has an accessor (server-side login evidence); not "batch"


@dataclass(frozen=True)
class AppRoleCredentials:
    """role_id + secret_id of one AppRole. ``secret_id`` is a credential: it is kept out of repr."""

    role: str
    role_id: str
    secret_id: str = field(repr=False)
    policies: tuple[str, ...] = ()


@dataclass(frozen=True)
class BootstrapResult:
    """What bootstrap set up. Non-secret except each role's ``secret_id`` (hidden from repr)."""

    url: str
    kv_mount: str
    transit_mount: str
    approle_mount: str
    data_key: str
    signing_key: str
    dataset_prefix: str
    training_prefix: str
    roles: tuple[AppRoleCredentials, ...]
    secret_paths: tuple[str, ...] = ()

    def role(self, name: str) -> AppRoleCredentials:
        for creds in self.roles:
            if creds.role == name:
                return creds
        raise KeyError(f"no AppRole {name!r} in this bootstrap (have: {[r.role for r in self.roles]})")

    @property
    def sanitizer(self) -> AppRoleCredentials:
        return self.role(SANITIZER)

    @property
    def trainer(self) -> AppRoleCredentials:
        return self.role(TRAINER)

    @property
    def keyadmin(self) -> AppRoleCredentials:
        return self.role(KEYADMIN)

    def to_json(self) -> str:
        """Full JSON including secret_ids: write it only to a 0600 file (see ``write_result``)."""
        body = {
            "url": self.url,
            "kv_mount": self.kv_mount,
            "transit_mount": self.transit_mount,
            "approle_mount": self.approle_mount,
            "data_key": self.data_key,
            "signing_key": self.signing_key,
            "dataset_prefix": self.dataset_prefix,
            "training_prefix": self.training_prefix,
            "secret_paths": list(self.secret_paths),
            "roles": {
                r.role: {"role_id": r.role_id, "secret_id": r.secret_id, "policies": list(r.policies)}
                for r in self.roles
            },
        }
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BootstrapResult:
        body = json.loads(text)
        roles = tuple(
            AppRoleCredentials(role=name, role_id=v["role_id"], secret_id=v["secret_id"],
                               policies=tuple(v.get("policies", ())))
            for name, v in sorted(body["roles"].items(), key=_role_order)
        )
        return cls(
            url=body["url"], kv_mount=body["kv_mount"], transit_mount=body["transit_mount"],
            approle_mount=body.get("approle_mount", DEFAULT_APPROLE_MOUNT),
            data_key=body["data_key"], signing_key=body["signing_key"],
            dataset_prefix=body["dataset_prefix"], training_prefix=body["training_prefix"],
            roles=roles, secret_paths=tuple(body.get("secret_paths", ())),
        )


def _role_order(item: tuple[str, Any]) -> tuple[int, str]:
    name = item[0]
    return (ROLES.index(name) if name in ROLES else len(ROLES), name)


def write_result(result: BootstrapResult, path: str | Path) -> Path:
    """Write the result (with secret_ids) atomically, readable by the owner only."""
    from secure_data.dataset.atomic import atomic_write_text

    return atomic_write_text(path, result.to_json() + "\n", mode=0o600)


def read_result(path: str | Path) -> BootstrapResult:
    return BootstrapResult.from_json(Path(path).read_text())


def render_policy(role: str, **names: str) -> str:
    """The HCL policy of ``role`` with mount, key and prefix names filled in."""
    values = {
        "kv_mount": DEFAULT_KV_MOUNT,
        "transit_mount": DEFAULT_TRANSIT_MOUNT,
        "data_key": DEFAULT_DATA_KEY,
        "signing_key": DEFAULT_SIGNING_KEY,
        "attestation_key": DEFAULT_ATTESTATION_KEY,
        "dataset_prefix": DEFAULT_DATASET_PREFIX,
        "training_prefix": DEFAULT_TRAINING_PREFIX,
    }
    unknown = set(names) - set(values)
    if unknown:
        raise TypeError(f"unknown policy parameter(s): {sorted(unknown)}")
    values.update(names)
    for key, value in values.items():
        # A name with quotes, braces or globs would change the policy's meaning.
        if not value or any(ch in value for ch in '"{}*+\n\\ ') or value.startswith("/") or ".." in value:
            raise ValueError(f"unsafe value for {key}: {value!r}")
    template = Template((POLICY_DIR / f"{role}.hcl").read_text())
    return template.substitute(values)


def policy_name(role: str) -> str:
    return POLICY_PREFIX + role


def default_secrets(dataset_prefix: str = DEFAULT_DATASET_PREFIX,
                    training_prefix: str = DEFAULT_TRAINING_PREFIX) -> dict[str, dict[str, str]]:
    """Demo storage credentials (random, so a leak test has something unguessable to look for)."""
    def creds(name: str) -> dict[str, str]:
        return {
            "access_key_id": f"demo-{name}-" + _secrets.token_hex(4),
            "secret_access_key": _secrets.token_urlsafe(30),
        }

    return {
        f"{dataset_prefix}/raw": creds("raw"),
        f"{dataset_prefix}/output": creds("output"),
        f"{training_prefix}/package": creds("package"),
    }


def _ensure_mount(client: Any, path: str, backend: str, options: dict | None = None) -> None:
    mounts = client.sys.list_mounted_secrets_engines()
    mounts = mounts.get("data", mounts)
    existing = mounts.get(path.rstrip("/") + "/")
    if existing is None:
        client.sys.enable_secrets_engine(backend, path=path, options=options)
        return
    if existing["type"] != backend:
        raise RuntimeError(f"mount '{path}' exists with type {existing['type']!r}, expected {backend!r}")
    if backend == "kv" and str((existing.get("options") or {}).get("version", "1")) != "2":
        raise RuntimeError(f"mount '{path}' is KV version 1; secure-data needs KV v2")


def _ensure_transit_key(client: Any, mount: str, name: str, key_type: str) -> None:
    import hvac.exceptions

    try:
        info = client.secrets.transit.read_key(name, mount_point=mount)["data"]
    except hvac.exceptions.InvalidPath:
        client.secrets.transit.create_key(name, key_type=key_type, mount_point=mount)
        return
    if info["type"] != key_type:
        raise RuntimeError(f"Transit key '{name}' exists with type {info['type']!r}, expected {key_type!r}")


def ensure_approle(
    client: Any,
    role: str,
    policies: list[str],
    *,
    mount: str = DEFAULT_APPROLE_MOUNT,
    token_ttl: str = DEFAULT_LOGIN_TTL,
    token_max_ttl: str = DEFAULT_LOGIN_MAX_TTL,
    secret_id_ttl: str = DEFAULT_CREDENTIAL_TTL,
) -> AppRoleCredentials:
    """Create or update one AppRole and issue a new secret_id for it."""
    auths = client.sys.list_auth_methods()
    auths = auths.get("data", auths)
    if mount.rstrip("/") + "/" not in auths:
        client.sys.enable_auth_method("approle", path=mount)
    client.auth.approle.create_or_update_approle(
        role,
        token_policies=policies,
        token_ttl=token_ttl,
        token_max_ttl=token_max_ttl,
        secret_id_ttl=secret_id_ttl,
        token_type=SERVICE_KIND,
        mount_point=mount,
    )
    role_id = client.auth.approle.read_role_id(role, mount_point=mount)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(
        role, metadata={"issued_by": "secure-data setup"}, mount_point=mount
    )["data"]["secret_id"]
    return AppRoleCredentials(role=role, role_id=role_id, secret_id=secret_id, policies=tuple(policies))


def _write_secrets(client: Any, mount: str, secrets: Mapping[str, Mapping[str, Any]], *,
                   overwrite: bool) -> None:
    import hvac.exceptions

    for path, data in secrets.items():
        try:
            current = client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True)["data"]["data"]
        except hvac.exceptions.InvalidPath:
            current = None
        if current is None or (overwrite and dict(current) != dict(data)):
            client.secrets.kv.v2.create_or_update_secret(path=path, secret=dict(data), mount_point=mount)


def bootstrap(
    url: str,
    root_token: str,
    *,
    kv_mount: str = DEFAULT_KV_MOUNT,
    transit_mount: str = DEFAULT_TRANSIT_MOUNT,
    approle_mount: str = DEFAULT_APPROLE_MOUNT,
    data_key: str = DEFAULT_DATA_KEY,
    signing_key: str = DEFAULT_SIGNING_KEY,
    attestation_key: str = DEFAULT_ATTESTATION_KEY,
    dataset_prefix: str = DEFAULT_DATASET_PREFIX,
    training_prefix: str = DEFAULT_TRAINING_PREFIX,
    secrets: Mapping[str, Mapping[str, Any]] | None = None,
    token_ttl: str = DEFAULT_LOGIN_TTL,
    token_max_ttl: str = DEFAULT_LOGIN_MAX_TTL,
    namespace: str | None = None,
    verify: bool | str = True,
) -> BootstrapResult:
    """Set up mounts, Transit keys, policies, AppRoles and KV secrets; return the role credentials.

    ``secrets`` maps KV paths (relative to ``kv_mount``) to their data and is written
    as given (a new version only if the data changed). Without it, random demo
    credentials are written to paths that do not exist yet (see ``default_secrets``).
    """
    import hvac

    client = hvac.Client(url=url, token=root_token, namespace=namespace, verify=verify)
    names = dict(kv_mount=kv_mount, transit_mount=transit_mount, data_key=data_key, signing_key=signing_key,
                 attestation_key=attestation_key, dataset_prefix=dataset_prefix, training_prefix=training_prefix)
    rendered = {role: render_policy(role, **names) for role in ROLES}  # validates names before any write

    _ensure_mount(client, kv_mount, "kv", options={"version": "2"})
    _ensure_mount(client, transit_mount, "transit")
    _ensure_transit_key(client, transit_mount, data_key, DATA_KEY_TYPE)
    _ensure_transit_key(client, transit_mount, signing_key, SIGNING_KEY_TYPE)
    _ensure_transit_key(client, transit_mount, attestation_key, ATTESTATION_KEY_TYPE)

    for role, hcl in rendered.items():
        client.sys.create_or_update_policy(name=policy_name(role), policy=hcl)
    creds = tuple(
        ensure_approle(client, role, [policy_name(role)], mount=approle_mount,
                       token_ttl=token_ttl, token_max_ttl=token_max_ttl)
        for role in ROLES
    )

    if secrets is None:
        to_write, overwrite = default_secrets(dataset_prefix, training_prefix), False
    else:
        to_write, overwrite = dict(secrets), True
    _write_secrets(client, kv_mount, to_write, overwrite=overwrite)

    return BootstrapResult(
        url=url, kv_mount=kv_mount, transit_mount=transit_mount, approle_mount=approle_mount,
        data_key=data_key, signing_key=signing_key, dataset_prefix=dataset_prefix,
        training_prefix=training_prefix, roles=creds, secret_paths=tuple(sorted(to_write)),
    )


# The AppRoles that are Airflow connections (keyadmin rotates keys by hand, outside Airflow).
CONNECTION_ROLES = (SANITIZER, TRAINER)


def airflow_connections(result: BootstrapResult, url: str | None = None, *,
                        conn_ids: Mapping[str, str] | None = None, namespace: str | None = None,
                        verify: bool | str | None = None) -> dict[str, dict[str, Any]]:
    """``{conn_id: connection}`` for the sanitizer and trainer AppRoles, in the JSON form that
    ``airflow connections import`` and the local-filesystem secrets backend read (contains secret_ids).

    Connection ids: ``conn_ids`` or the deployment's (``SECURE_DATA_SANITIZER_VAULT_CONN_ID`` /
    ``SECURE_DATA_TRAINER_VAULT_CONN_ID``, default ``vault_sanitizer`` / ``vault_trainer``), the ones the DAGs,
    ``sanitize_dataset`` and ``package_consumer`` use by default. ``url``: the server as the workers reach it
    (default: the bootstrap's).
    """
    from secure_data.policy.anchors import sanitizer_vault_conn_id, trainer_vault_conn_id
    from secure_data.vault.connection import connection_dict_for

    ids = {SANITIZER: sanitizer_vault_conn_id(), TRAINER: trainer_vault_conn_id(), **dict(conn_ids or {})}
    return {ids[role]: connection_dict_for(role, result, url, namespace=namespace, verify=verify)
            for role in CONNECTION_ROLES}


def write_airflow_connections(connections: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Write the connections (0600, atomically): ``*.env`` as ``AIRFLOW_CONN_<ID>='<json>'`` lines (docker
    env-files, systemd ``EnvironmentFile``), anything else as ``airflow connections import`` JSON."""
    from secure_data.dataset.atomic import atomic_write_text

    if str(path).endswith(".env"):
        text = "".join(f"AIRFLOW_CONN_{conn_id.upper()}='{json.dumps(conn, sort_keys=True)}'\n"
                       for conn_id, conn in connections.items())
    else:
        text = json.dumps(dict(connections), indent=2, sort_keys=True) + "\n"
    return atomic_write_text(path, text, mode=0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secure_data.vault.setup", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="Vault/OpenBao address, e.g. http://127.0.0.1:8200")
    parser.add_argument("--token-file", help="file holding a root/admin token (never pass tokens on argv)")
    parser.add_argument("--out", help="where to write the role credentials (JSON, mode 0600)")
    parser.add_argument("--secrets-file", help="JSON {kv_path: {key: value}} to store instead of demo secrets")
    parser.add_argument("--kv-mount", default=DEFAULT_KV_MOUNT)
    parser.add_argument("--transit-mount", default=DEFAULT_TRANSIT_MOUNT)
    parser.add_argument("--data-key", default=DEFAULT_DATA_KEY)
    parser.add_argument("--signing-key", default=DEFAULT_SIGNING_KEY)
    parser.add_argument("--attestation-key", default=DEFAULT_ATTESTATION_KEY)
    parser.add_argument("--dataset-prefix", default=DEFAULT_DATASET_PREFIX)
    parser.add_argument("--training-prefix", default=DEFAULT_TRAINING_PREFIX)
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--ca-cert", default=None, help="CA bundle for TLS verification")
    parser.add_argument("--render-policies", metavar="DIR", help="only write the rendered HCL policies to DIR")
    parser.add_argument("--emit-airflow-connections", metavar="FILE",
                        help="also write the sanitizer and trainer AppRoles as Airflow connections (0600): "
                             "FILE.json for `airflow connections import`, FILE.env for AIRFLOW_CONN_* lines")
    parser.add_argument("--creds", metavar="FILE", help="with --emit-airflow-connections: convert this earlier "
                                                        "--out file instead of bootstrapping (no token needed)")
    parser.add_argument("--connection-url", default=None,
                        help="the Vault address as the Airflow workers reach it (default: --url / the creds')")
    args = parser.parse_args(argv)

    names = dict(kv_mount=args.kv_mount, transit_mount=args.transit_mount, data_key=args.data_key,
                 signing_key=args.signing_key, attestation_key=args.attestation_key, dataset_prefix=args.dataset_prefix,
                 training_prefix=args.training_prefix)
    if args.render_policies:
        out = Path(args.render_policies)
        out.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            (out / f"{policy_name(role)}.hcl").write_text(render_policy(role, **names))
        print(f"wrote {len(ROLES)} policies to {out}")
        return 0
    if args.creds:
        if not args.emit_airflow_connections:
            parser.error("--creds goes with --emit-airflow-connections")
        return _emit(read_result(args.creds), args)
    if not (args.url and args.token_file and args.out):
        parser.error("--url, --token-file and --out are required (or use --render-policies, or --creds with "
                     "--emit-airflow-connections)")
    token = Path(args.token_file).read_text().strip()
    secrets = json.loads(Path(args.secrets_file).read_text()) if args.secrets_file else None
    result = bootstrap(args.url, token, secrets=secrets, namespace=args.namespace,
                       verify=args.ca_cert or True, **names)
    write_result(result, args.out)
    # Non-secret summary only.
    print(json.dumps({"url": result.url, "roles": [r.role for r in result.roles],
                      "secret_paths": list(result.secret_paths), "out": str(args.out)}))
    return _emit(result, args) if args.emit_airflow_connections else 0


def _emit(result: BootstrapResult, args: argparse.Namespace) -> int:
    connections = airflow_connections(result, args.connection_url, namespace=args.namespace,
                                      verify=args.ca_cert or None)
    path = write_airflow_connections(connections, args.emit_airflow_connections)
    print(json.dumps({"airflow_connections": sorted(connections), "file": str(path)}))  # ids only, no secret
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
