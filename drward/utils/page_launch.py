"""The one launcher of drward's two web pages (``tools/app.py``, the restoration page; ``tools/label_pairs.py``, the
labelling page): the same ``--host``, ``--port`` and ``--auth`` arguments, the same binding and the same warning.

* ``--host`` defaults to 127.0.0.1: the page is reachable from this machine only;
* ``--auth USER:PASS`` asks for that login (Gradio's); the password may contain ``:``;
* serving on any other address without ``--auth`` prints one warning line to stderr (:func:`exposure_warning`),
  since anyone who reaches the address can then use the page;
* never a public share link (``share=False``);
* an upload limit on the server itself (Gradio's ``max_file_size``; a larger POST to its upload route is refused
  with HTTP 413, whatever the client): ``DEFAULT_MAX_UPLOAD_BYTES`` unless the page sets its own (``tools/app.py``:
  ``--max-file-mb``). Without it Gradio accepts uploads of any size on every page, the labelling page included.

The page object is any Gradio ``Blocks`` (anything with ``launch``); Gradio itself is imported by the pages.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any, Optional, TextIO, Tuple

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2 ** 20  # 20 MB
Auth = Optional[Tuple[str, str]]


def add_launch_arguments(parser: Any) -> None:
    """``--host``, ``--port`` and ``--auth`` on an argparse parser or argument group."""
    parser.add_argument('--host', default=DEFAULT_HOST,
                        help=f'address to bind [{DEFAULT_HOST}: this machine only; another address needs --auth]')
    parser.add_argument('--port', type=int, default=DEFAULT_PORT, help=f'port [{DEFAULT_PORT}]')
    parser.add_argument('--auth', metavar='USER:PASS', help='ask for this login (needed off this machine)')


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, auth: Auth) -> Optional[str]:
    """The warning for serving on a non-loopback ``host`` without ``auth``, else ``None``."""
    if is_loopback(host) or auth is not None:
        return None
    return (f'WARNING: serving on {host} without --auth: anyone who can reach this address can use the page (see '
            'and send images, write labels); pass --auth USER:PASS')


def parse_auth(text: Optional[str]) -> Auth:
    """``USER:PASS`` → ``(user, password)``; ``None`` for no login; ValueError (one line) otherwise."""
    if not text:
        return None
    user, sep, password = text.partition(':')
    if not sep or not user or not password:
        raise ValueError(f'--auth must be USER:PASS, got {text!r}')
    return user, password


def launch(page: Any, host: str = DEFAULT_HOST, port: Optional[int] = DEFAULT_PORT, auth: Auth = None,
           stream: TextIO = sys.stderr, **launch_options: Any) -> Any:
    """Warn when exposed (:func:`exposure_warning`), then ``page.launch`` on ``host:port`` with ``auth``, no share
    link; ``launch_options`` go to Gradio (allowed paths, upload limit, ...)."""
    warning = exposure_warning(host, auth)
    if warning:
        print(warning, file=stream, flush=True)
    launch_options.setdefault('max_file_size', DEFAULT_MAX_UPLOAD_BYTES)
    return page.launch(server_name=host, server_port=port, auth=auth, share=False, **launch_options)


def launch_arguments(args: argparse.Namespace) -> Tuple[str, int, Auth]:
    """``(host, port, auth)`` of parsed :func:`add_launch_arguments` arguments (a bad ``--auth`` raises)."""
    return args.host, args.port, parse_auth(args.auth)
