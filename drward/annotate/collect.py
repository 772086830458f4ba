"""Gathering the pairs to annotate: from a pairs file, or from a folder of faces, plus a file of human labels.

Folder layout for :func:`pairs_from_folder` — one sub-folder per face, holding that face's candidate images
(restorations, degradations, …)::

    images/
      face_0001/  a.png  b.png  c.png  [reference.png]  [caption.txt]
      face_0002/  ...

Every unordered pair of candidates of a sub-folder becomes one unlabelled pair (image names in sorted order);
``reference.*`` (if present) becomes the pairs' reference and ``caption.txt`` their ``caption_key``.

Paths are made absolute while annotating (:func:`absolute_pairs`) and written relative to the output file's
folder (:func:`relative_pairs`) when they lie under it.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Dict, List, Sequence, Tuple

from drward.data.image_io import IMAGE_EXTENSIONS, ImageListError
from drward.data.pairs_file import PreferencePair, resolve_path

PATH_FIELDS = ('image_a', 'image_b', 'reference', 'caption_key')


def absolute_pairs(pairs: Sequence[PreferencePair], base_dir: str) -> List[PreferencePair]:
    """Copies of ``pairs`` with every path field resolved against ``base_dir``."""
    return [dataclasses.replace(pair, **{f: resolve_path(getattr(pair, f), base_dir) for f in PATH_FIELDS})
            for pair in pairs]


def _relative(path: str | None, base_dir: str) -> str | None:
    if path is None:
        return None
    relative = os.path.relpath(path, base_dir)
    return path if relative.startswith(os.pardir) else relative


def relative_pairs(pairs: Sequence[PreferencePair], base_dir: str) -> List[PreferencePair]:
    """Copies of ``pairs`` whose paths under ``base_dir`` are written relative to it (others stay absolute)."""
    base_dir = os.path.abspath(base_dir)
    return [dataclasses.replace(pair, **{f: _relative(getattr(pair, f), base_dir) for f in PATH_FIELDS})
            for pair in pairs]


def _face_folder_pairs(folder: str, reference_stem: str) -> List[PreferencePair]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    references = [n for n in names if os.path.splitext(n)[0] == reference_stem]
    candidates = [os.path.join(folder, n) for n in names if n not in references]
    reference = os.path.join(folder, references[0]) if references else None
    caption_file = os.path.join(folder, 'caption.txt')
    caption_key = caption_file if os.path.isfile(caption_file) else None
    return [PreferencePair(a, b, caption_key=caption_key, reference=reference)
            for a, b in itertools.combinations(candidates, 2)]


def pairs_from_folder(root: str, reference_stem: str = 'reference') -> List[PreferencePair]:
    """All within-face pairs of a folder laid out as in the module docstring (absolute paths, unlabelled)."""
    if not os.path.isdir(root):
        raise ImageListError(f'image folder {root} does not exist')
    pairs = []
    for name in sorted(os.listdir(root)):
        if os.path.isdir(os.path.join(root, name)):
            pairs.extend(_face_folder_pairs(os.path.abspath(os.path.join(root, name)), reference_stem))
    if not pairs:
        raise ImageListError(f'image folder {root} has no sub-folder with two or more images; '
                             f'expected one sub-folder per face (see drward/annotate/collect.py)')
    return pairs


def merge_human_labels(pairs: Sequence[PreferencePair],
                       human: Sequence[PreferencePair]) -> Tuple[List[PreferencePair], int]:
    """Put the human labels onto the matching pairs (A/B in either order; label flipped when reversed).

    Human rows that match no pair are appended. Returns ``(merged pairs, number matched)``. All paths absolute.
    """
    index: Dict[Tuple[str, str], int] = {(p.image_a, p.image_b): i for i, p in enumerate(pairs)}
    merged, matched, extra = list(pairs), 0, []
    for row in human:
        if not row.is_human:
            continue
        if (row.image_a, row.image_b) in index:
            i, label = index[(row.image_a, row.image_b)], row.label
        elif (row.image_b, row.image_a) in index:
            i, label = index[(row.image_b, row.image_a)], 1.0 - row.label
        else:
            extra.append(row)
            continue
        merged[i] = dataclasses.replace(merged[i], label=label, source='human', confidence=row.confidence)
        matched += 1
    return merged + extra, matched
