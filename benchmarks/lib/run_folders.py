"""The folders a benchmark's training runs leave in the repo, and their removal when it ends."""
from __future__ import annotations

import glob
import os
import shutil
from typing import Iterable


def remove_run_folders(root: str, names: Iterable[str], work: str, keep: bool) -> None:
    """Remove ``experiments/<name>`` (with the ``<name>_archived_*`` folders BasicSR makes when a launch finds no
    state to resume), ``tb_logger/<name>`` and the benchmark's ``work`` folder; with ``keep``, say where they are."""
    if keep:
        print(f'logs under {work}')
        return
    for name in names:
        for folder in glob.glob(os.path.join(root, 'experiments', f'{name}_archived_*')):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(os.path.join(root, 'experiments', name), ignore_errors=True)
        shutil.rmtree(os.path.join(root, 'tb_logger', name), ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
