"""Helpers for the browser tests: a real server in a thread, a real Chromium.

Playwright's sync API cannot run inside a Trio loop, so the tests are plain
sync tests and the server runs in a background thread with a Trio loop of
its own. :class:`ServerThread` starts it, waits until its engines are loaded
and stops it with the same shutdown event as ``voicetrio serve`` on SIGTERM.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
import trio
import trio.from_thread
import trio.lowlevel

from voicetrio.config import Config
from voicetrio.server.app import Running, serve

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM: Final = Path("/usr/bin/chromium")
REPO: Final = Path(__file__).resolve().parent.parent
#: Screenshots and other artifacts a person can look at (git-ignored).
OUTPUT_DIR: Final = REPO / "test-output"

CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)


def require_browser() -> None:
    """Skips the calling test when Chromium or Playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (run ./scripts/setup-browser)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (run ./scripts/setup-browser)")


@dataclass
class ServerThread:
    """``voicetrio.server.app.serve`` on a Trio loop of its own, in a thread."""

    config: Config
    port: int = 0
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _token: trio.lowlevel.TrioToken | None = None
    _running: Running | None = None
    _error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> ServerThread:
        self._thread = threading.Thread(target=self._main, name="voicetrio-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"server did not start within {timeout_s} s")
        if self._error is not None:
            raise RuntimeError("server failed to start") from self._error
        return self

    def stop(self, timeout_s: float = 30) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._running is not None and self._thread.is_alive():
            # The loop may end on its own (a crash) between the check and the call.
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._running.shutdown.set, trio_token=self._token)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError("server thread did not stop")
        self._thread = None
        if self._error is not None:
            raise RuntimeError("server failed") from self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(partial(serve, self.config))
            # Ready means models loaded: a page that talks at once is served.
            with trio.fail_after(120):
                await running.hub.host.loaded.wait()
            if running.hub.host.failure is not None:
                raise running.hub.host.failure
            self._running = running
            self.port = running.port
            self._ready.set()


@contextmanager
def running_server(config: Config) -> Iterator[ServerThread]:
    server = ServerThread(config).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def chromium_page(
    microphone_wav: Path,
    profile_dir: Path,
    *,
    loop_audio: bool = False,
    extra_args: tuple[str, ...] = (),
) -> Iterator[tuple[Page, list[str]]]:
    """A fresh headless Chromium whose microphone plays ``microphone_wav``;
    ``extra_args`` are more Chromium flags (a host mapping, a trusted key).

    Yields the page and a list that collects the page's errors (uncaught
    exceptions and console errors), which a test should find empty.
    """
    from playwright.sync_api import sync_playwright

    audio = f"{microphone_wav}{'' if loop_audio else '%noloop'}"
    args = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={audio}", *extra_args]
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=args,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on(
                "console",
                lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
            )
            yield page, errors
        finally:
            context.close()


def save_screenshot(page: Page, folder: Path, name: str) -> Path:
    """Saves a full-page screenshot in ``folder`` and copies it to test-output/."""
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    OUTPUT_DIR.mkdir(exist_ok=True)
    shutil.copy(path, OUTPUT_DIR / name)
    return path
