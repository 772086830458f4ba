"""Where captions are written so that a rerun skips the faces already done: ``.txt`` files or one TSV file.

Two stores, the two layouts the datasets read (:mod:`drward.data.image_io`, :mod:`drward.data.image_source`):

* :class:`BesideTextStore` — ``<stem>.txt`` beside each image (a folder of images on disk). Each file is written
  atomically (:func:`drward.utils.atomic_io.atomic_write`); a face counts as captioned once its file exists.
* :class:`CaptionFileStore` — one TSV file of ``key<TAB>caption`` lines (an lmdb's ``captions.tsv``, or any caption
  file). Captions are appended a batch at a time, one ``write`` + ``fsync`` per batch; a face counts as captioned
  once its key has a line. A kill can at worst tear the last line, which has no newline then: opening the store
  again ends a ``key<TAB>...`` line and drops a fragment without a tab (with a warning; that face is captioned
  again).

Caption text is stored on one line (runs of whitespace, newlines and tabs included, become one space).
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Tuple

from basicsr.utils import get_root_logger

from drward.data import image_io
from drward.utils.atomic_io import atomic_write


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines, tabs) made one space, stripped."""
    return ' '.join(text.split())


class BesideTextStore:
    """Captions as ``<stem>.txt`` beside each image; keys are the image paths."""

    def __init__(self) -> None:
        self.description = '<stem>.txt beside each image'

    @staticmethod
    def text_path(image_path: str) -> str:
        return os.path.splitext(image_path)[0] + '.txt'

    def has(self, image_path: str) -> bool:
        """True when the image's ``.txt`` exists (a blank one included: it was written, the captioner gave nothing)."""
        return os.path.isfile(self.text_path(image_path))

    def add(self, items: Iterable[Tuple[str, str]]) -> None:
        """Write ``(image path, caption)`` pairs, each ``.txt`` atomically."""
        for image_path, caption in items:
            with atomic_write(self.text_path(image_path)) as tmp:
                with open(tmp, 'w', encoding='utf-8') as handle:
                    handle.write(one_line(caption) + '\n')


class CaptionFileStore:
    """Captions as ``key<TAB>caption`` lines of one TSV file, appended (see the module docstring)."""

    def __init__(self, path: str) -> None:
        if path.lower().endswith('.json'):
            raise image_io.CaptionFileError(f'caption file {path}: captions are appended as they are made, which a '
                                            'JSON file cannot take; name a .tsv file (the datasets read both)')
        self.path, self.description = path, path
        repair_last_line(path)
        self.captions: Dict[str, str] = image_io.read_caption_file(path) if os.path.isfile(path) else {}

    def has(self, key: str) -> bool:
        return key in self.captions

    def add(self, items: Iterable[Tuple[str, str]]) -> None:
        """Append ``(key, caption)`` lines in one write, then fsync."""
        lines = []
        for key, caption in items:
            if '\t' in key or '\n' in key:
                raise ValueError(f'caption key {key!r} holds a tab or newline; it cannot go into {self.path}')
            self.captions[key] = one_line(caption)
            lines.append(f'{key}\t{self.captions[key]}\n')
        if not lines:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        with open(self.path, 'a', encoding='utf-8') as handle:
            handle.write(''.join(lines))
            handle.flush()
            os.fsync(handle.fileno())


def repair_last_line(path: str) -> None:
    """End the file at ``path`` with a newline. A last line without one is the tail of an interrupted write (or a
    hand-written file): a ``key<TAB>caption`` line is kept and ended; a fragment without a tab, which no reader
    could parse, is cut off with a warning (that face is captioned again)."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    with open(path, 'rb+') as handle:
        data = handle.read()
        if data.endswith(b'\n'):
            return
        keep = data.rfind(b'\n') + 1
        if b'\t' in data[keep:]:
            handle.write(b'\n')
            return
        handle.truncate(keep)
    get_root_logger().warning(f'caption file {path}: dropped a torn last line ({data[keep:][:40]!r}, no tab and no '
                              'newline: an interrupted write); that face is captioned again')
