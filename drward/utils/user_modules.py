"""Importing a user's own module so that its ``@register(...)`` lines run: a restorer, a reward, a loss or a dataset
of one's own, the way BasicSR's plugins register when imported (docs/design.md §3).

A module is named by a dotted name (``my_lab.restorers``, importable from the working directory or the
environment) or by a ``.py`` file (a path relative to the working directory, which is the repo root for
``tools/train.py``, ``tools/test.py`` and ``tools/restore.py``), imported under its file stem. The option file names
them in its top-level ``host_packages`` list (every component) or in a reward entry's ``module:`` key.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from drward.utils.options import OptionError


def import_user_module(module: str, where: str) -> None:
    """Import ``module``: a dotted module name, or a ``.py`` file path (imported once, under its file stem).
    :class:`OptionError` (one line, naming ``where``) when there is no such file or it cannot be imported."""
    if str(module).endswith('.py'):
        path = os.path.abspath(module)
        if not os.path.isfile(path):
            raise OptionError(f'{where}: no such file {module} (a path is read from the working directory)')
        name = os.path.splitext(os.path.basename(path))[0]
        if getattr(sys.modules.get(name), '__file__', None) == path:
            return
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        spec.loader.exec_module(loaded)
        return
    try:
        importlib.import_module(str(module))
    except ImportError as err:
        raise OptionError(f'{where}: cannot import {module!r} ({err})') from err
