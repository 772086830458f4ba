"""Packing a folder of face images into a BasicSR lmdb, with their captions (what ``tools/make_lmdb.py`` runs).

The images go in through BasicSR's own ``make_lmdb_from_imgs`` (PNG bytes at ``compress_level``, key = the image's
path relative to the folder without extension, ``meta_info.txt`` lines ``<key>.png (h,w,c) <level>``), so the
result is the ``ffhq_512.lmdb`` that BasicSR's and GFPGAN's datasets read, and drward's datasets read it with
``io_backend: {type: lmdb}``. The ``<stem>.txt`` caption beside each image goes into ``<lmdb>/captions.tsv``
(``key<TAB>caption``; :mod:`drward.data.caption_store`).

Before packing, every image is decoded once: an unreadable, truncated or non-image file, a name that is not ASCII
(BasicSR's keys are) and a second file with the same key are skipped, each logged with its reason, as the
datasets skip bad files (:mod:`drward.data.bad_images`).

What "finished" means: the lmdb is built in ``<stem>.incomplete.lmdb`` beside the destination and renamed onto it
only once every image and caption is in, so an existing ``<name>.lmdb`` whose ``meta_info.txt`` lists as many keys
as its ``data.mdb`` holds entries is complete. A rerun keeps a complete lmdb (BasicSR's scripts stop when the lmdb
exists; this does too, but exits cleanly, says how many images of the folder are not in it, and adds the captions
of ``.txt`` files that ``captions.tsv`` lacks). A destination that is not complete (an interrupted BasicSR script)
is refused. ``overwrite`` rebuilds either; the old lmdb is replaced only when the new one is complete. An
interrupted pack leaves only the ``.incomplete.lmdb`` folder, which the next run deletes and starts again.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from multiprocessing import Pool
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from basicsr.utils import get_root_logger
from tqdm import tqdm

from drward.data import image_io
from drward.data.caption_store import CaptionFileStore
from drward.data.image_source import (
    LMDB_CAPTION_FILE,
    LMDB_META_FILE,
    close_lmdb_client,
    lmdb_entries,
    lmdb_key,
    read_lmdb_keys,
)
from drward.utils.image_header import UnsafeImageError, check_image_bytes
from drward.utils.image_header import max_pixels as image_max_pixels

INCOMPLETE_SUFFIX = '.incomplete.lmdb'


class LmdbPackError(RuntimeError):
    """The destination is in the way (an incomplete lmdb) or nothing can be packed; the message says which."""


@dataclass
class PackReport:
    """What :func:`pack_folder` did: ``action`` is ``built``, ``rebuilt`` or ``kept``."""

    action: str
    lmdb_path: str
    images: int
    skipped: List[str] = field(default_factory=list)
    captions_added: int = 0
    captions_total: int = 0
    not_packed: int = 0  # images of the folder that a kept lmdb does not hold


def folder_images(folder: str, recursive: bool = False) -> List[str]:
    """Image paths relative to ``folder`` (POSIX separators), sorted; sub-folders too when ``recursive``."""
    if not os.path.isdir(folder):
        raise image_io.ImageListError(f'image folder {folder} does not exist')
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.endswith('.lmdb')) if recursive else []
        rel = os.path.relpath(parent, folder)
        found += [name if rel == '.' else f'{rel}/{name}'.replace(os.sep, '/') for name in names
                  if name.lower().endswith(image_io.IMAGE_EXTENSIONS)]
    if not found:
        raise image_io.ImageListError(f'image folder {folder} holds no images ({", ".join(image_io.IMAGE_EXTENSIONS)})')
    return sorted(found)


def lmdb_is_complete(lmdb_path: str) -> Tuple[bool, str]:
    """``(complete, why not)``: ``meta_info.txt`` readable and listing exactly as many keys as ``data.mdb`` holds."""
    import lmdb
    try:
        keys = read_lmdb_keys(lmdb_path)
        entries = lmdb_entries(lmdb_path)
    except (OSError, lmdb.Error) as error:
        return False, str(error).splitlines()[0]
    if entries != len(keys):
        return False, f'{LMDB_META_FILE} lists {len(keys)} images, data.mdb holds {entries}'
    return True, ''


def _probe(args: Tuple[str, str, int]) -> Tuple[str, Optional[Tuple[int, int, int]], str]:
    """``(relative path, (h, w, c) or None, reason)`` of one image: its header checked (pixel ``limit``, truncation),
    then decoded once to find bad files."""
    folder, rel, limit = args
    try:
        data = np.fromfile(os.path.join(folder, rel), dtype=np.uint8)
    except OSError as error:
        return rel, None, f'cannot read: {error.strerror or error}'
    if data.size == 0:
        return rel, None, 'cannot decode: the file is empty'
    try:  # the header first: a decompression bomb or a truncated file is refused without decoding it
        check_image_bytes(data.tobytes(), rel, limit)
    except UnsafeImageError as error:
        return rel, None, str(error).replace(f'{rel} ', '', 1).replace(f' {rel}', '', 1)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        return rel, None, 'cannot decode: corrupt, truncated or not an image'
    return rel, (img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2]), ''


def check_images(folder: str, rel_paths: Sequence[str], workers: int = 1,
                 max_pixels: Optional[int] = None) -> Tuple[List[str], List[Tuple[int, int, int]], List[str]]:
    """``(usable paths, their shapes, skipped "path (reason)")``: each image decoded once (``workers`` processes),
    bad files (over ``max_pixels``, default the process-wide limit, refused from the header), non-ASCII names and
    repeated keys skipped with a logged warning."""
    limit = image_max_pixels() if max_pixels is None else int(max_pixels)
    jobs = [(folder, rel, limit) for rel in rel_paths]
    bar = dict(total=len(jobs), unit='image', desc='check images')
    if workers > 1:
        with Pool(workers) as pool:
            results = list(tqdm(pool.imap(_probe, jobs, chunksize=16), **bar))
    else:
        results = [_probe(job) for job in tqdm(jobs, **bar)]
    good, shapes, skipped, seen = [], [], [], {}
    for rel, shape, reason in results:
        key = lmdb_key(rel)
        if shape is not None and not (key.isascii() and key.isprintable() and '\t' not in key):
            reason = 'the name is not printable ASCII (BasicSR writes lmdb keys as ASCII)'
        elif shape is not None and key in seen:
            reason = f'same key {key!r} as {seen[key]}'
        if reason:
            skipped.append(f'{rel} ({reason})')
            get_root_logger().warning(f'make_lmdb: skipping {os.path.join(folder, rel)}: {reason}')
            continue
        seen[key] = rel
        good.append(rel)
        shapes.append(shape)
    return good, shapes, skipped


def add_folder_captions(folder: str, rel_paths: Sequence[str], lmdb_path: str) -> Tuple[int, int]:
    """Append the ``<stem>.txt`` caption of each image whose key ``<lmdb>/captions.tsv`` lacks; ``(added, total)``."""
    store = CaptionFileStore(os.path.join(lmdb_path, LMDB_CAPTION_FILE))
    found = [(lmdb_key(rel), image_io.caption_beside(os.path.join(folder, rel))) for rel in rel_paths]
    new = [(key, caption) for key, caption in found if caption is not None and not store.has(key)]
    store.add(new)
    return len(new), len(store.captions)


def pack_folder(folder: str, lmdb_path: str, recursive: bool = False, overwrite: bool = False,
                compress_level: int = 1, workers: int = 1) -> PackReport:
    """Pack ``folder``'s images and captions into ``lmdb_path`` (``*.lmdb``); see the module docstring."""
    lmdb_path = lmdb_path.rstrip('/')
    if not lmdb_path.endswith('.lmdb'):
        raise LmdbPackError(f'the lmdb path must end with .lmdb (BasicSR requires it), got {lmdb_path}')
    rel_paths = folder_images(folder, recursive)
    exists = os.path.exists(lmdb_path)
    if exists and not overwrite:
        complete, why = lmdb_is_complete(lmdb_path)
        if not complete:
            raise LmdbPackError(f'{lmdb_path} exists but is not a complete lmdb ({why}); rerun with --overwrite to '
                                'rebuild it')
        return _keep(folder, rel_paths, lmdb_path)
    good, shapes, skipped = check_images(folder, rel_paths, workers)
    if not good:
        raise LmdbPackError(f'none of the {len(rel_paths)} images in {folder} can be packed (first: {skipped[0]})')
    tmp = lmdb_path[:-len('.lmdb')] + INCOMPLETE_SUFFIX
    if os.path.exists(tmp):
        get_root_logger().info(f'make_lmdb: removing {tmp}, left by an interrupted run')
        shutil.rmtree(tmp)
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    raw_bytes = sum(h * w * c * 2 for h, w, c in shapes)  # ≥ PNG size (16-bit included); lmdb files grow sparsely
    make_lmdb_from_imgs(folder, tmp, good, [lmdb_key(rel) for rel in good], compress_level=compress_level,
                        map_size=int(raw_bytes * 1.1) + (64 << 20))
    added, total = add_folder_captions(folder, good, tmp)
    complete, why = lmdb_is_complete(tmp)
    if not complete:
        raise LmdbPackError(f'the new lmdb {tmp} is not complete ({why}); it is left there for inspection')
    if exists:
        close_lmdb_client(lmdb_path)
        shutil.rmtree(lmdb_path)
    os.replace(tmp, lmdb_path)
    return PackReport('rebuilt' if exists else 'built', lmdb_path, len(good), skipped, added, total)


def _keep(folder: str, rel_paths: Sequence[str], lmdb_path: str) -> PackReport:
    keys = set(read_lmdb_keys(lmdb_path))
    packed = [rel for rel in rel_paths if lmdb_key(rel) in keys]
    added, total = add_folder_captions(folder, packed, lmdb_path)
    return PackReport('kept', lmdb_path, len(keys), captions_added=added, captions_total=total,
                      not_packed=len(rel_paths) - len(packed))
