"""A real multi-worker deployment on one machine: CeleryExecutor, Redis, PostgreSQL, one worker per identity.

Used by ``make demo EXECUTOR=celery`` and tests/security/test_celery_deployment.py. Redis and
PostgreSQL are the Debian packages (scripts/system-deps.sh); every process is started here and
stopped on exit.

Identity placement (docs/deploy.md, SECURITY.md):

| worker | queue | Unix user | Vault credentials |
| --- | --- | --- | --- |
| sanitize | ``sanitize`` | ``sd-sanitize`` | sanitizer AppRole, in a 0600 connections file only that user can read |
| gpu | ``gpu`` | ``sd-gpu`` | none |
| train | ``train`` | ``sd-train`` | trainer AppRole, in a 0600 connections file only that user can read |

Each worker reads its file through Airflow 3's workers-side secrets backend (``[workers] secrets_backend``
= ``LocalFilesystemBackend``), which is consulted before anything the API server knows; the API server,
scheduler, DAG processor and triggerer hold no Vault credential at all, so a connection lookup through
the Task SDK from another worker finds nothing. Distinct Unix users keep a task from reading another
worker's files or ``/proc/<pid>/environ``. Workers get no metadata-DB URL and no JWT secret.

Needs root (to create the users and start the servers as their Debian users); ``unavailable()`` says why not.
"""

from __future__ import annotations

import glob
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secure_data_testkit.airflow_env import REPO_ROOT
from secure_data_testkit.openbao import free_port

QUEUES = ("sanitize", "gpu", "train")
USERS = {"sanitize": "sd-sanitize", "gpu": "sd-gpu", "train": "sd-train"}
CHAIN_GROUP = "sd-chain"  # run folders: sanitize + gpu workers
PACKAGE_GROUP = "sd-packages"  # published packages: written by sanitize, read by train
GROUPS = {"sanitize": (CHAIN_GROUP, PACKAGE_GROUP), "gpu": (CHAIN_GROUP,), "train": (PACKAGE_GROUP,)}
CONNECTION_OF = {"sanitize": ("vault_sanitizer", "sanitizer"), "train": ("vault_trainer", "trainer")}


def unavailable() -> str | None:
    """Why this machine cannot run the deployment (None: it can)."""
    if os.geteuid() != 0:
        return "needs root: it creates one Unix user per worker and starts PostgreSQL/Redis as their users"
    if not shutil.which("redis-server"):
        return "redis-server is not installed (scripts/system-deps.sh installs Debian's redis-server)"
    if not _pg_bin("initdb"):
        return "PostgreSQL is not installed (scripts/system-deps.sh installs Debian's postgresql)"
    try:
        import airflow.providers.celery  # noqa: F401
        import psycopg2  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (the 'test' / 'celery' extras)"
    return None


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ensure_users() -> dict[str, pwd.struct_passwd]:
    """The workers' system users and groups (created once; idempotent)."""
    for group in (CHAIN_GROUP, PACKAGE_GROUP):
        try:
            grp.getgrnam(group)
        except KeyError:
            _run(["groupadd", "--system", group])
    users = {}
    for queue, name in USERS.items():
        try:
            pwd.getpwnam(name)
        except KeyError:
            _run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                  "--shell", "/usr/sbin/nologin", "--groups", ",".join(GROUPS[queue]), name])
        users[queue] = pwd.getpwnam(name)
    return users


def _own(path: Path, user: str, group: str | None = None, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    gid = grp.getgrnam(group).gr_gid if group else pwd.getpwnam(user).pw_gid
    os.chown(path, pwd.getpwnam(user).pw_uid, gid)
    os.chmod(path, mode)
    return path


def _stop(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class PostgresServer:
    """Debian's PostgreSQL in a throw-away cluster, run as the ``postgres`` user, loopback only."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def start(self, timeout: float = 60) -> PostgresServer:
        import psycopg2

        data = _own(self.workdir / "data", "postgres")
        sock = _own(self.workdir / "sock", "postgres")
        if not (data / "PG_VERSION").exists():
            subprocess.run([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                            "-E", "UTF8"], check=True, user="postgres", cwd=str(self.workdir),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port = self.port or free_port()
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(
            [_pg_bin("postgres"), "-D", str(data), "-p", str(self.port), "-k", str(sock),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            user="postgres", cwd=str(self.workdir), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start: "
                                       + (self.workdir / "postgres.log").read_text(errors="replace")[-2000:]) from None
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'")
            if cur.fetchone() is None:
                cur.execute("CREATE DATABASE airflow")
        conn.close()
        return self

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class RedisServer:
    """Debian's redis-server, run as the ``redis`` user, loopback only, no persistence."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> RedisServer:
        import redis

        _own(self.workdir, "redis")
        self.port = self.port or free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            user="redis", cwd=str(self.workdir), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=self.port).ping()
                return self
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        _stop(self.proc)


def worker_python(shim_dir: Path) -> tuple[str, dict[str, str]]:
    """(interpreter, extra env) a worker user can run with our virtualenv's packages.

    The venv's own interpreter when the worker users can execute it; otherwise (e.g. a pyenv Python
    under a 0700 /root) the system Python of the same minor version, with the venv's site-packages
    added by a ``sitecustomize`` shim written to ``shim_dir``.
    """
    venv_python = Path(sys.executable)
    try:
        if subprocess.run([str(venv_python), "-c", "pass"], user="nobody", capture_output=True,
                          check=False).returncode == 0:
            return str(venv_python), {}
    except OSError:  # exec refused: e.g. a pyenv Python under a 0700 /root
        pass
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    if system is None:
        raise RuntimeError(f"{venv_python} is not executable by other users and there is no system "
                           f"python{sys.version_info.major}.{sys.version_info.minor}")
    import site

    shim = Path(shim_dir)
    shim.mkdir(parents=True, exist_ok=True)
    os.chmod(shim, 0o755)  # noqa: S103 (the worker users import from it; no secret)
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # The venv's packages first, and none of the system's dist-packages (Debian's own, older modules).
    (shim / "sitecustomize.py").write_text(
        "import site, sys\n"
        "sys.path[:] = [p for p in sys.path if 'dist-packages' not in p]\n"
        "before = list(sys.path)\n" + "".join(f"site.addsitedir({p!r})\n" for p in paths)
        + "added = [p for p in sys.path if p not in before]\n"
        "sys.path[:] = added + [p for p in sys.path if p not in added]\n", encoding="utf-8")
    os.chmod(shim / "sitecustomize.py", 0o644)
    return system, {"PYTHONPATH": os.pathsep.join([str(shim), str(REPO_ROOT / "plugins")])}


@dataclass
class CeleryDeployment:
    """OpenBao credentials placed per worker; PostgreSQL + Redis; Airflow server side; three Celery workers.

    ``workdir`` must be traversable by the worker users (it is made 0755); ``shared_env``: non-secret
    deployment settings every process gets (policy file, models, output and package roots...).
    ``credentials``: ``{"sanitizer": conn dict, "trainer": conn dict}`` (``connection_dict_for``).
    """

    workdir: Path
    credentials: dict[str, dict[str, Any]]
    shared_env: dict[str, str] = field(default_factory=dict)
    dags_folder: Path | None = None
    concurrency: dict[str, int] = field(default_factory=lambda: {"sanitize": 2, "gpu": 1, "train": 1})
    log: Any = print
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    stack: Any = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    users: dict[str, pwd.struct_passwd] = field(default_factory=dict)

    @property
    def output_root(self) -> Path:
        return self.workdir / "runs"

    @property
    def packages_root(self) -> Path:
        return self.workdir / "packages"

    def worker_home(self, queue: str) -> Path:
        return self.workdir / "workers" / queue

    def celery_env(self) -> dict[str, str]:
        return {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": self.redis.url.rsplit("/", 1)[0] + "/1",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "sanitize",
                "SECURE_DATA_SANITIZE_QUEUE": "sanitize", "SECURE_DATA_GPU_QUEUE": "gpu",
                "SECURE_DATA_TRAIN_QUEUE": "train"}

    def start(self) -> CeleryDeployment:
        from secure_data_testkit.airflow_stack import AirflowStack

        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.workdir, 0o755)  # noqa: S103 (worker users traverse it; no secret)
            self.users = ensure_users()
            _own(self.output_root, "root", CHAIN_GROUP, 0o2770)
            _own(self.packages_root, USERS["sanitize"], PACKAGE_GROUP, 0o2750)
            self.log("starting PostgreSQL and Redis (Debian packages)")
            self.postgres = PostgresServer(self.workdir / "postgres").start()
            self.redis = RedisServer(self.workdir / "redis").start()
            env = {**self.shared_env, **self.celery_env(),
                   "SECURE_DATA_OUTPUT_ROOT": str(self.output_root),
                   "SECURE_DATA_PACKAGE_ROOT": str(self.packages_root),
                   "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url}
            self.log("starting Airflow (api-server, scheduler, dag-processor, triggerer; CeleryExecutor, PostgreSQL)")
            self.stack = AirflowStack(home=self.workdir / "airflow", dags_folder=self.dags_folder, extra_env=env,
                                      drop_env_prefixes=("AIRFLOW_CONN_",))
            self.stack.start()
            self.log("starting Celery workers: sanitize (sanitizer identity), gpu (no identity), train (trainer)")
            for queue in QUEUES:
                self.workers[queue] = self._start_worker(queue)
            self._wait_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_worker(self, queue: str) -> subprocess.Popen:
        user = USERS[queue]
        home = _own(self.worker_home(queue), user)
        python, py_env = worker_python(self.workdir / "pyshim")
        env = {k: v for k, v in self.stack.env().items()
               if not k.startswith("AIRFLOW_CONN_") and k not in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                                                                  "AIRFLOW__API_AUTH__JWT_SECRET",
                                                                  "AIRFLOW__API__SECRET_KEY")}
        env.update(py_env)
        env.update({
            "AIRFLOW_HOME": str(home), "HOME": str(home),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # No metadata DB for workers (Airflow 3 tasks talk to the execution API): a throw-away SQLite
            # file in the worker's private home, so nothing a task runs can reach the real one.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'unused.db'}",
            "YOLO_CONFIG_DIR": str(home / "ultralytics"),
            "SECURE_DATA_MODELS_ROOT": str(home / "models"),
            "TMPDIR": str(home / "tmp"),
        })
        (home / "tmp").mkdir(exist_ok=True)
        os.chown(home / "tmp", self.users[queue].pw_uid, self.users[queue].pw_gid)
        if queue in CONNECTION_OF:
            conn_id, role = CONNECTION_OF[queue]
            secrets = _own(home / "secrets", user)
            path = secrets / "connections.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({conn_id: self.credentials[role]}, fh)
            os.chown(path, self.users[queue].pw_uid, self.users[queue].pw_gid)
            env["AIRFLOW__WORKERS__SECRETS_BACKEND"] = "airflow.secrets.local_filesystem.LocalFilesystemBackend"
            env["AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS"] = json.dumps({"connections_file_path": str(path)})
        log = open(self.workdir / f"worker-{queue}.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            [python, "-m", "airflow", "celery", "worker", "--queues", queue, "--concurrency",
             str(self.concurrency.get(queue, 1)), "--celery-hostname", f"{queue}@%h", "--skip-serve-logs",
             "--without-gossip", "--without-mingle"],
            env=env, user=user, group=self.users[queue].pw_gid,
            extra_groups=list(GROUPS[queue]), umask=0o027 if queue == "train" else 0o007,
            cwd=str(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return proc

    def _wait_workers(self, timeout: float = 120) -> None:
        """Until every worker answers a Celery ping (its queue is consumed)."""
        from celery import Celery

        app = Celery(broker=self.redis.url)
        deadline = time.monotonic() + timeout
        expected = {f"{q}@" for q in QUEUES}
        while time.monotonic() < deadline:
            for queue, proc in self.workers.items():
                if proc.poll() is not None:
                    tail = (self.workdir / f"worker-{queue}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"celery worker {queue} exited with {proc.returncode}:\n{tail}")
            replies = app.control.ping(timeout=1.0) or []
            seen = {name.split("@")[0] + "@" for reply in replies for name in reply}
            if expected <= seen:
                return
            time.sleep(1)
        raise RuntimeError(f"celery workers not all up within {timeout}s")

    def stop(self) -> None:
        for proc in self.workers.values():  # all at once, cold (SIGQUIT): nothing is running any more
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGQUIT)
        for proc in self.workers.values():
            _stop(proc, timeout=15)
        self.workers.clear()
        if self.stack is not None:
            self.stack.stop()
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop()

    def __enter__(self) -> CeleryDeployment:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def deployment_workdir(prefix: str = "secure-data-celery-") -> Path:
    """A fresh folder the worker users can traverse (pytest's tmp folders are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)  # noqa: S103 (worker users traverse it; no secret)
    return path


def demo_deployment(workdir: Path, bao_url: str, bootstrap_result: Any, *, extra_dags: tuple[Path, ...] = (),
                    log: Any = print) -> CeleryDeployment:
    """The demo's Celery deployment (not started): demo policy and models, our DAGs (+ ``extra_dags``),
    the sanitizer's and the trainer's AppRole connections for their workers only."""
    from secure_data.vault.connection import connection_dict_for
    from secure_data_testkit.demo import model_env, write_demo_policy
    from secure_data_testkit.models import centerface_model, demo_detector

    dags = workdir / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    for dag_file in (*sorted((REPO_ROOT / "dags").glob("*.py")), *extra_dags):
        shutil.copyfile(dag_file, dags / dag_file.name)
    os.chmod(dags, 0o755)  # noqa: S103 (DAG files: every worker parses them; no secret)
    model_path, model_sha = demo_detector()
    face_path, face_sha = centerface_model()
    models = {"model_path": str(model_path), "model_sha256": model_sha, "face_model_path": str(face_path),
              "face_model_sha256": face_sha}
    shared_env = {"SECURE_DATA_POLICY_FILE": str(write_demo_policy(workdir / "policy.yaml")), **model_env(models),
                  "SECURE_DATA_SCHEDULE": "none"}
    credentials = {role: connection_dict_for(role, bootstrap_result, bao_url) for role in ("sanitizer", "trainer")}
    return CeleryDeployment(workdir, credentials, shared_env, dags_folder=dags, log=log)


def run_celery_demo(workdir: Path, source: Path | None = None, *, timeout: float = 1800,
                    conf: dict[str, Any] | None = None, log: Any = print) -> dict[str, Any]:
    """`make demo EXECUTOR=celery`: OpenBao, PostgreSQL, Redis, Airflow and three workers; the chain once."""
    from secure_data.vault.setup import bootstrap
    from secure_data_testkit.demo import make_demo_dataset, run_chain
    from secure_data_testkit.openbao import OpenBaoServer

    reason = unavailable()
    if reason:
        raise RuntimeError(f"the Celery demo cannot run here: {reason}")
    work = deployment_workdir()  # traversable by the worker users; linked from ``workdir``
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "deployment").symlink_to(work)
    log("starting OpenBao and applying the policy bundle")
    with OpenBaoServer(workdir=work / "openbao") as bao:
        result = bootstrap(bao.url, bao.root_token)
        with demo_deployment(work, bao.url, result, log=log) as deployment:
            for dag_id in ("secure_pretraining_sanitization", "secure_training"):
                deployment.stack.wait_for_dag(dag_id)
            src = source or make_demo_dataset(work / "dataset")
            if source is not None:  # the worker users must read it
                src = Path(shutil.copytree(source, work / "dataset"))
            os.chmod(src, 0o755)  # noqa: S103 (the dataset is read by the sanitize and gpu workers)
            log(f"dataset: {src}")
            summary = run_chain(deployment, src, conf=conf, timeout=timeout)
            summary["workdir"] = str(work)
            summary["executor"] = "CeleryExecutor"
            return summary
