"""Headless Chromium for the browser tests: Playwright (PyPI) driving Debian's ``chromium``.

No browser is downloaded: ``scripts/system-deps.sh`` installs Debian's ``chromium`` and Playwright
is pointed at it. Every page opened through :class:`Watched` records what a reader's browser would
do that it must not: script that ran (dialogs, a beacon request), requests that left the allowed
origins (aborted, so a test never needs the network), and page errors.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """Debian's chromium, or skip (fail under CI, where `make test` installs it)."""
    import pytest

    found = chromium_path()
    if not found:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make test installs it on Debian as root)")
        pytest.skip("chromium not installed (scripts/system-deps.sh installs it)")
    return found


@contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class Watched:
    """A page whose dialogs, outside requests and errors are recorded (see the module doc).

    ``allowed``: origins (``scheme://host:port``) the page may load from; ``file`` URLs are allowed.
    """

    page: Any
    allowed: tuple[str, ...]
    dialogs: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)

    @classmethod
    def open(cls, context: Any, *allowed: str) -> Watched:
        watched = cls(context.new_page(), tuple(allowed))
        page = watched.page
        page.on("dialog", lambda d: (watched.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: watched.errors.append(str(e)))
        page.on("response", lambda r: watched.responses.append(r))
        page.route("**/*", watched._route)
        return watched

    def _route(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("file", "data", "about") or f"{parts.scheme}://{parts.netloc}" in self.allowed:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def goto(self, url: str, **kwargs: Any) -> Any:
        response = self.page.goto(url, **kwargs)
        self.page.wait_for_load_state("load")
        return response

    def script_ran(self) -> list[str]:
        """Dialogs opened by page script (every hostile name used in the tests calls alert)."""
        return list(self.dialogs)


@contextmanager
def live_app(app: Any, timeout: float = 60.0) -> Iterator[str]:
    """Serve an ASGI app (e.g. the real Airflow API app) on a loopback port in a thread; yield its origin."""
    import threading
    import time

    import uvicorn

    from secure_data_testkit.openbao import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start serving")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
