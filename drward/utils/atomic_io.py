"""Atomic file writes for checkpoints and training states: a kill mid-write never leaves a torn file behind.

Every file is written to a temporary file in the destination's folder (``.<name>.<pid>.<random>.tmp``), flushed
and fsync'ed, then renamed onto the destination (``os.replace``, atomic on POSIX and Windows) and the folder is
fsync'ed so that the rename itself survives a crash. A reader therefore sees either the old file, or the new one
complete — never half of it. A kill leaves at most a hidden ``*.tmp`` file, which :func:`remove_stale_temp_files`
clears before a resume.

:func:`atomic_write` yields the temporary path to any writer (``torch.save``, safetensors' ``save_file``, another
serializer); :func:`atomic_save` picks the writer by the file's suffix.
"""
from __future__ import annotations

import os
import os.path as osp
import uuid
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch

TEMP_SUFFIX = '.tmp'


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
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        written = osp.getsize(tmp) if osp.exists(tmp) else 0
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
