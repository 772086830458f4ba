"""``--smoke``: every benchmark entry point's seconds-long run with its smallest settings.

A smoke run checks the plumbing (options, imports, the table it prints), so a benchmark cannot break unseen; it
measures nothing worth reading. ``tests/test_benchmark_smoke.py`` runs every entry point's smoke mode.
"""
from __future__ import annotations

import argparse
from typing import Any


def add_smoke_flag(parser: argparse.ArgumentParser, what: str, **settings: Any) -> None:
    """``--smoke``: the arguments in ``settings`` replace the parsed ones (``what``: one line saying what runs); a
    callable value is called when the flag is given (e.g. a fresh temporary folder)."""
    parser.add_argument('--smoke', action='store_true', help=f'seconds, for the test suite: {what}')
    parser.set_defaults(smoke_settings=settings)


def apply_smoke(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the smoke settings applied when ``--smoke`` was given."""
    if getattr(args, 'smoke', False):
        for key, value in args.smoke_settings.items():
            setattr(args, key, value() if callable(value) else value)
    return args


__all__ = ['add_smoke_flag', 'apply_smoke']
