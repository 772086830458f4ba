"""Where a dataset's images live: a folder on disk or a BasicSR lmdb, both read through BasicSR's ``FileClient``.

The ``io_backend`` option of a dataset picks the source (BasicSR's and GFPGAN's convention):

* ``{type: disk}`` (default): item names are file paths (a folder's images, or a meta file's list); a face's caption
  is ``<stem>.txt`` beside it, else the caption file's entry for its file name or stem.
* ``{type: lmdb}``: the root is an lmdb folder as BasicSR's ``make_lmdb_from_imgs`` writes it (``tools/make_lmdb.py``):
  ``data.mdb``, ``lock.mdb`` and ``meta_info.txt`` with one ``<key>.png (h,w,c) <compress level>`` line per image,
  e.g. ``dataroot_gt: datasets/ffhq/ffhq_512.lmdb``. Item names are the keys (the image's path relative to the
  packed folder, without extension: ``00000``, ``face_0001/gfpgan``). Captions come from a caption file keyed by the
  same keys; ``<lmdb>/captions.tsv`` (what ``tools/make_lmdb.py`` and ``tools/caption.py`` write) is used when the
  option file names none. Further ``io_backend`` keys (``readahead``, ``lock``, ...) go to ``lmdb.open``.

An entry that cannot be used (missing file or key, corrupt bytes, too small) raises
:class:`~drward.data.image_io.ImageReadError` naming it, which the datasets' :class:`~drward.data.bad_images.
BadImageGuard` turns into a logged skip, whichever the backend. The lmdb environment is opened lazily, once per
process (:func:`lmdb_client`: each DataLoader worker opens its own), and is never pickled.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from basicsr.utils import FileClient

from drward.data import image_io
from drward.utils.options import OptionError

BACKENDS = ('disk', 'lmdb')
LMDB_META_FILE = 'meta_info.txt'
#: The caption file an lmdb carries inside its folder (key<TAB>caption lines).
LMDB_CAPTION_FILE = 'captions.tsv'


def lmdb_key(name: str) -> str:
    """The lmdb key of an image path relative to the packed folder: POSIX separators, no extension."""
    return os.path.splitext(name.replace(os.sep, '/'))[0]


def is_lmdb_folder(path: str) -> bool:
    """True when ``path`` is a folder holding an lmdb's ``data.mdb``."""
    return os.path.isfile(os.path.join(path, 'data.mdb'))


def read_lmdb_keys(lmdb_path: str, meta_file: Optional[str] = None) -> List[str]:
    """The keys an lmdb's ``meta_info.txt`` (or ``meta_file``) lists, in its order (``00000.png (512,512,3) 1`` →
    ``00000``; names with another or no extension are taken the same way)."""
    meta_file = meta_file or os.path.join(lmdb_path, LMDB_META_FILE)
    return [lmdb_key(name) for name in image_io.read_meta_names(meta_file)]


class ImageSource:
    """Images by name from a folder or an lmdb (see the module docstring); ``read(name)`` decodes one."""

    def __init__(self, owner: str, io_backend: Optional[Mapping[str, Any]], root: Optional[str],
                 max_pixels: Optional[int] = None) -> None:
        options = dict(io_backend or {})
        self.max_pixels = None if max_pixels is None else int(max_pixels)  # None: the process-wide limit
        self.backend = options.pop('type', 'disk')
        if self.backend not in BACKENDS:
            raise OptionError(f'{owner}: io_backend type must be one of {list(BACKENDS)}, got {self.backend!r}')
        self.owner, self.root, self._client_options = owner, root, options
        self._client: Optional[FileClient] = None  # disk; lmdb clients are shared per process (lmdb_client)
        if self.is_lmdb:
            if not root:
                raise OptionError(f'{owner}: io_backend lmdb needs the lmdb folder as its root (dataroot_gt / '
                                  'image_root)')
            if not is_lmdb_folder(root):
                raise image_io.ImageListError(f'{owner}: {root} is not an lmdb (no data.mdb in it); make one with '
                                              'tools/make_lmdb.py')

    @property
    def is_lmdb(self) -> bool:
        return self.backend == 'lmdb'

    def names(self, meta_info_file: Optional[str] = None) -> List[str]:
        """Every item's name: disk — the meta file's paths (joined to the root) or the root folder's images;
        lmdb — the keys of ``meta_info_file`` (default: the lmdb's own ``meta_info.txt``)."""
        if self.is_lmdb:
            return read_lmdb_keys(self.root, meta_info_file)
        if meta_info_file is not None:
            return image_io.read_meta_file(meta_info_file, self.root)
        return image_io.list_images(self.root)

    def describe(self, name: str) -> str:
        """``image file <path>`` or ``key <key> of lmdb <root>``: how messages name an item."""
        return f'key {name} of lmdb {self.root}' if self.is_lmdb else f'image file {name}'

    def read(self, name: str, min_side: int = 1) -> np.ndarray:
        """Item ``name`` as ``(H, W, 3)`` float32 BGR in [0, 1]; :class:`~drward.data.image_io.ImageReadError`
        names a missing, corrupt or too small one."""
        return image_io.decode_image(self.read_bytes(name), self.describe(name), min_side, self.max_pixels)

    def read_bytes(self, name: str) -> bytes:
        """The encoded bytes of item ``name`` (:class:`~drward.data.image_io.ImageReadError` if it is absent)."""
        try:
            data = self._file_client().get(name)
        except OSError as error:
            raise image_io.ImageReadError(f'cannot read {self.describe(name)}: {error.strerror or error}') from error
        except UnicodeEncodeError as error:  # lmdb keys are ASCII (BasicSR encodes them so)
            raise image_io.ImageReadError(f'cannot read {self.describe(name)}: not an ASCII key') from error
        if data is None:
            raise image_io.ImageReadError(f'cannot read {self.describe(name)}: no such key in the lmdb')
        return data

    def _file_client(self) -> FileClient:
        if self.is_lmdb:
            return lmdb_client(self.root, self._client_options)
        if self._client is None:
            self._client = FileClient('disk')
        return self._client

    def default_caption_file(self) -> Optional[str]:
        """``<lmdb>/captions.tsv`` when the source is an lmdb that holds one; else None."""
        path = os.path.join(self.root, LMDB_CAPTION_FILE) if self.is_lmdb else None
        return path if path is not None and os.path.isfile(path) else None

    def caption(self, name: str, captions: Mapping[str, str]) -> Optional[str]:
        """The caption of item ``name``: disk — ``<stem>.txt`` beside it, else ``captions`` by file name or stem;
        lmdb — ``captions[key]``. None when there is none (or it is blank)."""
        if self.is_lmdb:
            return captions.get(name) or None
        return image_io.caption_beside(name) or image_io.lookup_caption(name, captions)


#: The open lmdb client of each lmdb folder in this process: ``{path: (pid, FileClient)}``.
_LMDB_CLIENTS: Dict[str, Tuple[int, FileClient]] = {}


def lmdb_client(path: str, options: Mapping[str, Any]) -> FileClient:
    """This process's FileClient for the lmdb at ``path``, opened on first use (``options`` go to ``lmdb.open``).

    py-lmdb opens an environment once per process, so every dataset on one lmdb (training and validation) shares
    it. A forked DataLoader worker inherits its parent's environment, which LMDB forbids using after a fork: the
    worker closes its copy (the parent's stays open) and opens its own.
    """
    path = os.path.abspath(path)
    pid, client = _LMDB_CLIENTS.get(path, (None, None))
    if client is not None and pid == os.getpid():
        return client
    if client is not None:
        for env in client.client._client.values():
            env.close()
    client = FileClient('lmdb', db_paths=path, **options)
    _LMDB_CLIENTS[path] = (os.getpid(), client)
    return client


def close_lmdb_client(path: str) -> None:
    """Close this process's environment of the lmdb at ``path`` if one is open (before the folder is replaced)."""
    pid, client = _LMDB_CLIENTS.pop(os.path.abspath(path), (None, None))
    if client is not None and pid == os.getpid():
        for env in client.client._client.values():
            env.close()


def lmdb_entries(path: str) -> int:
    """How many entries the lmdb at ``path`` holds (through this process's open environment when there is one)."""
    import lmdb
    pid, client = _LMDB_CLIENTS.get(os.path.abspath(path), (None, None))
    if client is not None and pid == os.getpid():
        return client.client._client['default'].stat()['entries']
    with lmdb.open(path, readonly=True, lock=False) as env:
        return env.stat()['entries']

