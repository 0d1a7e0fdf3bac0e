"""A local S3-compatible endpoint for tests: moto's server mode over real HTTP on a loopback port.

Object-storage sources are read through fsspec/s3fs exactly as in production (signed
HTTP requests, listing, ranged reads); only the far end is moto instead of AWS or MinIO,
because nothing outside this machine can be reached. ``moto`` and ``s3fs`` come with the
``test`` extra; production installs need only ``secure-data[s3]``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secure_data_testkit.openbao import free_port


@dataclass
class S3Server:
    """``with S3Server() as s3:`` starts the endpoint; ``s3.options`` are the s3fs storage options."""

    host: str = "127.0.0.1"
    port: int = 0
    access_key_id: str = field(default_factory=lambda: "AKIA" + secrets.token_hex(8).upper())
    secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    _server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def kv_secret(self) -> dict[str, str]:
        """The fields as ``secure_data.vault.setup`` stores dataset credentials in KV v2."""
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key,
                "endpoint_url": self.endpoint_url}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        # moto reads the region and credentials of its callers only from requests; keep boto quiet.
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.port = self.port or free_port()
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def upload_directory(self, directory: Path, bucket: str, prefix: str = "") -> int:
        """Create ``bucket`` and upload every regular file under ``directory``; returns the count."""
        client = self.client()
        client.create_bucket(Bucket=bucket)
        count = 0
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file() and not path.is_symlink():
                key = f"{prefix.strip('/')}/{path.relative_to(directory).as_posix()}".lstrip("/")
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                count += 1
        return count
