"""A real browser for the web-page tests: Debian's ``chromium`` driven by Playwright for Python.

Playwright cannot download its own browser on these machines, so the system one is launched by path
(``executable_path``) with ``--no-sandbox`` (needed when the tests run as root). ``tools/run.sh test`` installs
the Python packages always and the browser with apt when it runs as root and the browser is missing; where there
is no browser, the tests that need one skip with one line saying why (``pytest -rs`` prints it).

Pages under test are Gradio apps started with ``launch(prevent_thread_lock=True)`` on a free loopback port.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator, Optional

# Where Debian / Ubuntu put a Chromium; DRWARD_CHROMIUM overrides.
CHROMIUM_CANDIDATES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')


def chromium_executable() -> Optional[str]:
    """The browser to drive: ``$DRWARD_CHROMIUM`` if set, else the first Chromium on ``PATH``; None if none."""
    override = os.environ.get('DRWARD_CHROMIUM')
    if override:
        return override if os.path.isfile(override) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def why_no_browser() -> Optional[str]:
    """One line saying why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        return f'browser tests skipped: Playwright for Python is not installed ({err}); run tools/run.sh test'
    if chromium_executable() is None:
        return ('browser tests skipped: no Chromium found (looked for $DRWARD_CHROMIUM, '
                f'{", ".join(CHROMIUM_CANDIDATES)} on PATH); install it with `apt-get install chromium`, '
                'which tools/run.sh test does when it runs as root')
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    """Block until ``url`` answers an HTTP GET (any status below 500), or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status < 500:
                    return
        except Exception as err:  # connection refused while the server starts
            last = err
        time.sleep(0.2)
    raise TimeoutError(f'{url} did not answer within {timeout_s:.0f} s (last error: {last})')


@contextmanager
def served(demo) -> Iterator[str]:
    """Serve a Gradio Blocks on a free loopback port for the ``with`` block; yields its URL, closes it after."""
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name='127.0.0.1', server_port=port, quiet=True)
    try:
        url = f'http://127.0.0.1:{port}/'
        wait_for_http(url)
        yield url
    finally:
        demo.close()
