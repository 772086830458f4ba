"""Atomic file writes for checkpoints and training states: a kill mid-write never leaves a torn file behind.

Every file is written to a temporary file in the destination's folder (``.<name>.<pid>.<random>.tmp``), flushed
and fsync'ed, then renamed onto the destination (``os.replace``, atomic on POSIX and Windows) and the folder is
fsync'ed so that the rename itself survives a crash. A reader therefore sees either the old file, or the new one
complete — never half of it. A kill leaves at most a hidden ``*.tmp`` file, which :func:`remove_stale_temp_files`
clears before a resume.

:func:`atomic_write` yields the temporary path to any writer (``torch.save``, safetensors' ``save_file``, another
serializer); :func:`atomic_save` picks the writer by the file's suffix.

A failed write whose folder had less than :data:`FULL_BELOW` bytes free (measured before its temporary file is
removed), or that raised ``ENOSPC`` / ``EDQUOT``, is marked ``error.disk_full = True``
(:func:`drward.utils.storage_faults.guard_saves` turns it into one line).

Test hook (fault injection, ``benchmarks/chaos_soak.py``): the environment variable :data:`FAULT_ENV` holds
``pause:<seconds>`` (every write waits that long with its temporary file written, before the rename: a watcher can
kill the process mid-write) or ``enospc:<name>`` (the write of a file called ``<name>`` fails with ``ENOSPC`` after
its temporary file is written, as a full disk does).
"""
from __future__ import annotations

import errno
import os
import os.path as osp
import time
import uuid
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch

TEMP_SUFFIX = '.tmp'
#: The fault-injection hook's variable (module docstring).
FAULT_ENV = 'DRWARD_TEST_FAULT'
#: A failed write with less free space than this in its folder is taken as a full disk.
FULL_BELOW = 2 ** 20


def injected_fault(path: str) -> None:
    """Apply :data:`FAULT_ENV` to the write of ``path`` (its temporary file is written): pause, or fail."""
    kind, _, arg = os.environ.get(FAULT_ENV, '').partition(':')
    if kind == 'pause':
        time.sleep(float(arg))
    elif kind == 'enospc' and osp.basename(path) == arg:
        raise OSError(errno.ENOSPC, f'No space left on device (injected by {FAULT_ENV})', path)


def free_bytes(folder: str) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _fsync_path(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, 'O_DIRECTORY', 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open a folder; the data itself is already synced
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def temp_path_for(path: str) -> str:
    """A fresh hidden temporary name beside ``path``: ``<folder>/.<name>.<pid>.<random>.tmp``."""
    folder, name = osp.split(osp.abspath(path))
    return osp.join(folder, f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}')


@contextmanager
def atomic_write(path: str) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; once the block has written it, fsync it and rename it onto
    ``path``. If the block raises, the temporary file is removed and ``path`` is left as it was."""
    path = str(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if not osp.exists(tmp):
            raise FileNotFoundError(f'atomic_write: the writer did not create {tmp} (destination {path})')
        if FAULT_ENV in os.environ:
            injected_fault(path)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        written = osp.getsize(tmp) if osp.exists(tmp) else 0
        if isinstance(error, Exception) and hasattr(os, 'statvfs'):  # safetensors' own error type too
            error.disk_full = getattr(error, 'errno', None) in (errno.ENOSPC, errno.EDQUOT) or \
                free_bytes(folder) < FULL_BELOW
        if osp.exists(tmp):
            os.remove(tmp)
        if isinstance(error, (OSError, RuntimeError)):
            error.add_note(disk_space_note(folder, written))
        raise
    _fsync_path(folder, directory=True)


def disk_space_note(folder: str, written: int) -> str:
    """What the disk had when a write failed: a full disk shows up as a bare iostream or zip-writer error
    (``unexpected pos ...``) otherwise."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize if hasattr(os, 'statvfs') else None
    free_text = f'{free / 2 ** 30:.2f} GiB free' if free is not None else 'free space unknown'
    return (f'atomic_write: writing into {folder} failed after {written / 2 ** 30:.2f} GiB; {free_text} there now '
            f'(a full disk gives this error too); the destination file is unchanged')


def unshared(tensors: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Contiguous tensors with one storage each (safetensors refuses shared or strided ones); copies only those."""
    seen, out = set(), {}
    for key, tensor in tensors.items():
        storage = tensor.untyped_storage()
        whole = tensor.is_contiguous() and tensor.storage_offset() == 0 and \
            tensor.numel() * tensor.element_size() == storage.nbytes()
        if not whole or storage.data_ptr() in seen:
            tensor = tensor.contiguous().clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def atomic_save(obj: Any, path: str, metadata: Optional[Dict[str, str]] = None) -> str:
    """Write ``obj`` to ``path`` atomically: a ``.safetensors`` path takes a ``{name: tensor}`` dict (safetensors'
    ``save_file``, with ``metadata``), any other path anything ``torch.save`` takes. Returns ``path``."""
    path = str(path)
    if path.endswith('.safetensors'):
        from safetensors.torch import save_file
        with atomic_write(path) as tmp:
            save_file(obj, tmp, metadata=metadata)
    else:
        if metadata is not None:
            raise ValueError(f'atomic_save: metadata is only stored in .safetensors files, not in {path}')
        with atomic_write(path) as tmp:
            torch.save(obj, tmp)
    return path


def remove_stale_temp_files(folder: str) -> List[str]:
    """Remove the temporary files a killed :func:`atomic_write` left in ``folder``; returns their paths."""
    if not osp.isdir(folder):
        return []
    stale = [osp.join(folder, name) for name in sorted(os.listdir(folder))
             if name.startswith('.') and name.endswith(TEMP_SUFFIX)]
    for path in stale:
        os.remove(path)
    return stale


def place_file(src: str, dest: str) -> str:
    """Move a finished file (in ``dest``'s folder) onto ``dest`` atomically: fsync it, rename it, fsync the folder.
    A reader sees the old ``dest`` or the complete new one."""
    _fsync_path(src)
    os.replace(src, dest)
    _fsync_path(osp.dirname(osp.abspath(dest)), directory=True)
    return dest
