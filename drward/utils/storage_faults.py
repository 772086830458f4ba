"""Storage faults a training run meets, each turned into one clear line before or instead of a traceback.

* **A full disk during a save** (:func:`guard_saves`): every file is written atomically
  (:mod:`drward.utils.atomic_io`), so the failed file is never renamed into place and the previous checkpoints and
  training state stay as they were; the run stops with one line naming the folder, and ``--auto_resume`` after space
  is freed continues from the newest complete state, bit for bit (``tests/test_storage_faults.py``).
* **An output folder that cannot be written** (:func:`check_writable`): ``tools/train.py`` (``experiments/``,
  ``tb_logger/``) and ``tools/test.py`` (``results/``) try a file in each before any model is built, and stop with
  one line instead of failing at the first save, maybe an hour in. ``tools/label_pairs.py`` checks its label log
  the same way (:func:`check_appendable`) before it builds the page, so no annotator's click is the first to fail.
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from typing import Callable, Iterable, Optional

#: The exit status of a run stopped by a full disk (``EX_IOERR`` of ``sysexits.h``).
EXIT_DISK_FULL = 74


def guard_saves(model, log: Callable[[str], None]) -> None:
    """Make ``model.save`` (this instance) stop the run with one line when a write fails on a full disk."""
    save = model.save

    def guarded(epoch: int, current_iter: int):
        try:
            return save(epoch, current_iter)
        except Exception as error:  # noqa: BLE001 - torch, safetensors and the OS each raise their own type
            if not getattr(error, 'disk_full', False):
                raise
            folder = osp.dirname(getattr(error, 'filename', None) or '') or model.opt['path'].get('models', '?')
            line = (f'Disk full while saving iteration {current_iter} (in {folder}): the previous checkpoints and '
                    'training state are intact; free some space, then resume with --auto_resume.')
            log(line)
            raise SystemExit(EXIT_DISK_FULL) from None

    model.save = guarded


def first_existing(path: str) -> str:
    """``path`` or its nearest existing parent folder."""
    path = osp.abspath(path)
    while not osp.exists(path) and osp.dirname(path) != path:
        path = osp.dirname(path)
    return path


def unwritable_reason(folder: str) -> Optional[str]:
    """Why nothing can be written into ``folder`` (or, when it does not exist yet, its nearest existing parent),
    or None when a file can be."""
    existing = first_existing(folder)
    if not osp.isdir(existing):
        return f'{existing} is a file, not a folder'
    try:
        handle, probe = tempfile.mkstemp(prefix='.drward_write_check_', dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        return f'{error.strerror or error}'
    return None


def check_writable(folders: Iterable[str], tool: str) -> None:
    """Stop with one line when a folder ``tool`` writes into cannot be written."""
    for folder in folders:
        reason = unwritable_reason(folder)
        if reason:
            raise SystemExit(f'{tool}: cannot write into {folder} ({reason}); make it writable, or run from a '
                             'checkout where it is')


def check_appendable(path: str, tool: str) -> None:
    """Stop with one line when the log ``path`` (appended to, e.g. the labelling page's label log) cannot be: its
    folder cannot be created or written, or the file exists and cannot be opened for appending (it is not changed)."""
    check_writable([osp.dirname(osp.abspath(path))], tool)
    if osp.isdir(path):
        raise SystemExit(f'{tool}: cannot append to {path} (it is a folder, not a file)')
    if osp.exists(path):
        try:
            with open(path, 'a'):
                pass
        except OSError as error:
            raise SystemExit(f'{tool}: cannot append to {path} ({error.strerror or error}); make it writable') from None


__all__ = ['EXIT_DISK_FULL', 'guard_saves', 'unwritable_reason', 'check_writable', 'check_appendable']
