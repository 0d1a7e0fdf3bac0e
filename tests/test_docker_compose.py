"""docker/docker-compose.yaml and docker/Dockerfile: structure and consistency with the real DAGs.

No Docker engine runs here, so this checks what can be checked without one: the compose file parses, its
interpolation fails fast on every missing secret, the services/commands/queues/pools/devices are the ones
the DAGs need (the DAGs are loaded through Airflow's DagBag with the compose environment), no secret value
is written in the file, and the Dockerfile builds on the installed Airflow version with constraints.txt.
It is also validated against the compose-spec JSON schema: ``docker/compose-spec.json`` (the copy shipped in
the ``docker-compose==1.29.2`` wheel, Apache-2.0; ``COMPOSE_SPEC_SCHEMA`` may name a newer one).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from secure_data_testkit.airflow_env import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker" / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
CONSTRAINTS = REPO_ROOT / "constraints.txt"

SERVER_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                   "airflow-triggerer")
WORKERS = {"airflow-worker-sanitize": "sanitize", "airflow-worker-gpu": "gpu", "airflow-worker-train": "train"}
AIRFLOW_SERVICES = (*SERVER_SERVICES, *WORKERS)
# Which Vault connection each worker may hold (issue 13: identity placement); None = no credential at all.
WORKER_IDENTITY = {"airflow-worker-sanitize": "vault-sanitizer-connection", "airflow-worker-gpu": None,
                   "airflow-worker-train": "vault-trainer-connection"}
SERVER_ONLY_KEYS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET")
REQUIRED_SERVICES = ("postgres", "redis", "openbao", *AIRFLOW_SERVICES)
# Airflow 3 component commands (the image's entrypoint prepends `airflow`).
EXPECTED_COMMANDS = {
    "airflow-apiserver": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
}
# Names whose values are secrets: each must be a `${VAR:?message}` reference, never a literal.
SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET(?!S_BACKEND)|TOKEN|FERNET|^AIRFLOW_CONN_|AUTH$")
REQUIRED_REF_RE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}$")
URL_PASSWORD_RE = re.compile(r"://[^:/@\s]*:(?P<password>\$\{[^}]*\}|[^@\s]*)@")
VAR_RE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(LookupError):
    pass


def interpolate(value, env: dict[str, str]):
    """Compose-style interpolation of every string in ``value`` (the subset of the syntax the file uses:
    ``${V}``, ``${V:-default}``, ``${V-default}``, ``${V:?msg}``, ``${V?msg}``, ``$$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and unset:
            return arg
        return current or ""

    return VAR_RE.sub(sub, value)


def referenced_variables(value) -> set[str]:
    text = json.dumps(value)
    return {m.group("name") for m in VAR_RE.finditer(text) if m.group("name")}


def required_variables(value) -> set[str]:
    text = json.dumps(value)
    return {m.group("name") for m in VAR_RE.finditer(text) if m.group("op") in (":?", "?")}


@pytest.fixture(scope="module")
def raw() -> dict:
    # PyYAML's safe loader resolves the `<<: *anchor` merges the way Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def sample_env(raw) -> dict[str, str]:
    """A value for every required variable (what a filled-in .env gives)."""
    return {name: f"/sample/{name.lower()}" if name.endswith(("_DIR", "_FILE")) else f"sample-{name.lower()}"
            for name in required_variables(raw)}


@pytest.fixture(scope="module")
def compose(raw, sample_env) -> dict:
    return interpolate(raw, sample_env)


def _command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    return args[1:] if args[:1] == ["airflow"] else args


def _option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _worker_queues(compose: dict) -> dict[str, set[str]]:
    """service -> queues its `celery worker` listens on (Celery's default is Airflow's default queue)."""
    queues = {}
    for name, service in compose["services"].items():
        args = _command(service)
        if args[:2] == ["celery", "worker"]:
            value = _option(args, "--queues", "-q")
            default = service.get("environment", {}).get("AIRFLOW__OPERATORS__DEFAULT_QUEUE", "default")
            queues[name] = set(value.split(",")) if value else {default}
    return queues


def test_required_services_exist(compose):
    missing = [s for s in REQUIRED_SERVICES if s not in compose["services"]]
    assert not missing, f"docker-compose.yaml lacks services: {missing}"


def test_every_missing_secret_fails_fast(raw, sample_env):
    required = required_variables(raw)
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
                 "AIRFLOW_API_SECRET_KEY", "SANITIZER_CONNECTION_FILE", "TRAINER_CONNECTION_FILE",
                 "BAO_ROOT_TOKEN", "SECURE_DATA_POLICY_DIR"):
        assert name in required, f"{name} is not a `${{{name}:?...}}` reference"
        env = {k: v for k, v in sample_env.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            interpolate(raw, env)
        with pytest.raises(MissingVariable, match=name):  # empty counts as unset for `:?`
            interpolate(raw, {**env, name: ""})
    # With every required variable set, nothing is left unresolved: the only `${` left are the `$${...}`
    # escapes (shell variables of the containers' own commands).
    assert json.dumps(interpolate(raw, sample_env)).count("${") == json.dumps(raw).count("$${")


def test_no_literal_secret_values(raw):
    """Secrets appear only as `${VAR:?...}` references: env values, URL passwords, --requirepass."""
    offenders = []
    for name, service in raw["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            text = "" if value is None else str(value)
            if SECRET_KEY_RE.search(key) and not REQUIRED_REF_RE.match(text):
                offenders.append(f"{name}.{key}={text!r}")
            for m in URL_PASSWORD_RE.finditer(text):
                if not REQUIRED_REF_RE.match(m.group("password")):
                    offenders.append(f"{name}.{key}: URL password {m.group('password')!r}")
        args = _command(service)
        password = _option(args, "--requirepass")
        if "--requirepass" in args and not REQUIRED_REF_RE.match(password or ""):
            offenders.append(f"{name}: --requirepass {password!r}")
    assert not offenders, offenders


def test_airflow_services_share_image_and_celery_executor(compose):
    services = compose["services"]
    builds = {json.dumps(services[s].get("build"), sort_keys=True) for s in AIRFLOW_SERVICES}
    images = {services[s].get("image") for s in AIRFLOW_SERVICES}
    assert len(builds) == 1 and len(images) == 1, (builds, images)
    build = services["airflow-scheduler"]["build"]
    assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve()
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        if name in SERVER_SERVICES:
            assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/0"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("redis://"), name  # workers need no DB
        # Airflow 3 task processes reach the api-server's execution API, by its service name.
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        # All workers must see the same run folders: one mount, same path as the output root.
        root = env["SECURE_DATA_OUTPUT_ROOT"]
        assert any(v.endswith(":" + root) for v in services[name]["volumes"]), (name, services[name]["volumes"])
    for name, expected in EXPECTED_COMMANDS.items():
        assert _command(services[name]) == expected, name


def test_compose_references_are_consistent(compose):
    """depends_on targets exist, health conditions have health checks, named volumes are declared."""
    services = compose["services"]
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} health; it has no check"
            if spec["condition"] == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} must run once"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith(("/", ".", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_gpu_worker_reserves_nvidia_and_serves_the_gpu_queue(compose):
    services = compose["services"]
    gpu = services["airflow-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count", "all") in ("all", 1)
               for d in devices), devices
    queues = _worker_queues(compose)
    assert queues["airflow-worker-gpu"] == {gpu["environment"]["SECURE_DATA_GPU_QUEUE"]}
    assert _option(_command(gpu), "--concurrency", "-c") == "1"
    sanitize, train = services["airflow-worker-sanitize"], services["airflow-worker-train"]
    assert queues["airflow-worker-sanitize"] == {sanitize["environment"]["SECURE_DATA_SANITIZE_QUEUE"]} == {
        sanitize["environment"]["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]}
    assert queues["airflow-worker-train"] == {train["environment"]["SECURE_DATA_TRAIN_QUEUE"]}
    assert "deploy" not in sanitize and "deploy" not in train


def test_each_worker_holds_only_its_own_identity(raw, compose):
    """Issue 13: both AppRole secret_ids were in the shared anchor, so every container (the GPU worker that
    loads models included) could log in as the trainer. Now: no AIRFLOW_CONN_* anywhere, each identity is a
    Compose secret mounted into one worker and read by the workers-side secrets backend; the GPU worker
    has none; no server service mounts one; workers get no DB URL, Fernet key or JWT secret."""
    services = compose["services"]
    assert "AIRFLOW_CONN_" not in json.dumps(raw)
    for name, service in services.items():
        mounted = [s["source"] if isinstance(s, dict) else s for s in service.get("secrets", [])]
        env = service.get("environment", {})
        if name in WORKER_IDENTITY:
            expected = WORKER_IDENTITY[name]
            assert mounted == ([expected] if expected else []), (name, mounted)
            for key in SERVER_ONLY_KEYS:
                assert key not in env, f"{name} must not get {key}"
            if expected:
                (secret,) = service["secrets"]
                kwargs = json.loads(env["AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS"])
                assert env["AIRFLOW__WORKERS__SECRETS_BACKEND"] == \
                    "airflow.secrets.local_filesystem.LocalFilesystemBackend"
                assert kwargs["connections_file_path"] == secret["target"], name
                assert secret.get("mode") in (0o400, 0o600, "0400", "0600"), secret
            else:
                assert not [k for k in env if "SECRETS_BACKEND" in k], name
        else:
            assert not mounted, f"{name} mounts {mounted}"
    assert set(compose["secrets"]) == {v for v in WORKER_IDENTITY.values() if v}
    for secret in compose["secrets"].values():
        assert set(secret) == {"file"}, secret  # a file on the host, never an inline value


def _init_pools(compose: dict) -> set[str]:
    init = compose["services"]["airflow-init"]
    script = " ".join(_command(init))
    pools = set()
    for m in re.finditer(r"airflow pools set\s+(\S+)\s+(\S+)", script):
        name, slots = (re.sub(r"^\"|\"$", "", x) for x in m.groups())
        # The script reads the service's environment (`$${VAR}` in the file is `${VAR}` for bash).
        name = re.sub(r"\$\{(\w+)\}", lambda v: init["environment"][v.group(1)], name)
        slots = re.sub(r"\$\{(\w+)\}", lambda v: str(init["environment"][v.group(1)]), slots)
        assert int(slots) >= 1, slots
        pools.add(name)
    return pools


def test_dag_queues_and_pools_are_served(compose, airflow_home, monkeypatch):
    """Load the real DAG files with the compose environment: every task's queue has a worker, and the
    anonymization pool is created by airflow-init."""
    from airflow.dag_processing.dagbag import DagBag

    env = compose["services"]["airflow-worker-gpu"]["environment"]
    for key in ("SECURE_DATA_GPU_QUEUE", "SECURE_DATA_GPU_POOL", "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
                "SECURE_DATA_SANITIZE_QUEUE", "SECURE_DATA_TRAIN_QUEUE"):
        monkeypatch.setenv(key, env[key])
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    dag_files = {Path(d.fileloc).name for d in bag.dags.values()}
    assert dag_files == {p.name for p in (REPO_ROOT / "dags").glob("*.py")}, dag_files

    served = set().union(*_worker_queues(compose).values())
    unserved = [(d.dag_id, t.task_id, t.queue) for d in bag.dags.values() for t in d.tasks
                if t.queue not in served]
    assert not unserved, f"tasks on queues no worker listens on: {unserved}"

    anonymize = bag.dags["secure_pretraining_sanitization"].get_task("anonymize")
    assert anonymize.queue == env["SECURE_DATA_GPU_QUEUE"] != env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    # The tasks that use the sanitizer identity run where it is, the training task where the trainer is.
    queues = _worker_queues(compose)
    sanitization = bag.dags["secure_pretraining_sanitization"]
    for task_id in ("policy", "preflight", "integrity", "poisoning", "anonymize_merge", "handoff", "report"):
        assert {sanitization.get_task(task_id).queue} == queues["airflow-worker-sanitize"], task_id
    assert {bag.dags["secure_training"].get_task("train").queue} == queues["airflow-worker-train"]
    assert anonymize.pool == env["SECURE_DATA_GPU_POOL"]
    assert anonymize.pool in _init_pools(compose)


def _dockerfile_lines() -> list[str]:
    """Instructions with line continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.split(";")[0].strip()
    return pins


def test_dockerfile_matches_installed_airflow_and_constraints():
    lines = _dockerfile_lines()
    base = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    airflow_version = importlib.metadata.version("apache-airflow")
    assert base == [f"apache/airflow:{airflow_version}-python3.11"], base
    constraints = _constraints()
    assert constraints["apache-airflow"] == airflow_version

    installs = [line for line in lines if "pip install" in line]
    # One image for every role: the workers' stage libraries (`workers` extra) and s3fs (`s3` extra).
    project = [line for line in installs if "'.[workers,s3]'" in line or '".[workers,s3]"' in line]
    assert project, "the project is not pip-installed with its workers and s3 extras"
    assert re.search(r"(-c|--constraint)\s+\S*constraints\.txt", project[0]), project[0]
    assert any("constraints.txt" in line for line in lines if line.startswith("COPY"))
    # Extra pins in the Dockerfile must agree with the lock wherever the lock pins the same package.
    pinned = dict(m.groups() for m in re.finditer(r"([A-Za-z0-9_.\-\[\]]+)==([0-9][^\s'\"]*)", " ".join(installs)))
    pinned = {re.sub(r"\[.*\]", "", k).lower().replace("_", "-"): v for k, v in pinned.items()}
    clashes = {k: (v, constraints[k]) for k, v in pinned.items() if k in constraints and constraints[k] != v}
    assert not clashes, clashes
    # CeleryExecutor needs the celery provider and a Redis client; PostgreSQL needs psycopg2.
    for package in ("apache-airflow-providers-celery", "redis", "psycopg2-binary"):
        assert package in pinned or package in constraints, f"{package} is not installed by the Dockerfile"
    env = " ".join(line for line in lines if line.startswith("ENV"))
    assert "YOLO_OFFLINE=1" in env and "YOLO_CONFIG_DIR=" in env
    assert any(re.match(r"COPY\b.*\bdags\s+/opt/airflow/dags$", line) for line in lines)


def test_compose_spec_schema(compose):
    """Validation against the compose-spec JSON schema (vendored; ``COMPOSE_SPEC_SCHEMA`` overrides it)."""
    schema_path = os.environ.get("COMPOSE_SPEC_SCHEMA") or str(REPO_ROOT / "docker" / "compose-spec.json")
    import jsonschema

    schema = json.loads(Path(schema_path).read_text())
    jsonschema.validate(compose, schema)


def test_env_example_lists_every_variable(raw):
    example = REPO_ROOT / "docker" / ".env.example"
    names = {line.split("=", 1)[0].strip() for line in example.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#")}
    missing = sorted(referenced_variables(raw) - names)
    assert not missing, f"docker/.env.example does not list {missing}"
