"""Reading face images, image lists and captions, with errors that name the file or folder at fault.

Images come back as numpy ``(H, W, 3)`` float32 in [0, 1], **BGR** (OpenCV's order, which BasicSR's degradation
functions assume). Grey images are replicated to three channels; an alpha channel is dropped; 16-bit images are
scaled to [0, 1] (the same float an 8-bit copy would give, without its rounding).

Captions (docs/design.md §1, "Captions") are looked up per image: ``<image stem>.txt`` beside the image, else a caption
file (JSON ``{name: caption}`` or TSV ``name<TAB>caption`` lines, where ``name`` is the image's file name or its
stem), else the caller's fallback.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Mapping, Optional

import cv2
import numpy as np

from drward.utils.image_header import UnsafeImageError, check_image_bytes

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


class ImageReadError(OSError):
    """An image file is missing, unreadable or not a decodable image; the message names the file."""


class ImageListError(FileNotFoundError):
    """An image folder or meta file is missing or lists no images; the message names it."""


class CaptionFileError(ValueError):
    """A caption file is unreadable or malformed; the message names the file (and line)."""


def read_image(path: str, min_side: int = 1, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` float32 BGR in [0, 1]; :class:`ImageReadError` names a bad file (one
    whose shorter side is under ``min_side`` pixels, or whose header declares more than ``max_pixels``)."""
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except OSError as error:
        raise ImageReadError(f'cannot read image file {path}: {error.strerror or error}') from error
    return decode_image(data, f'image file {path}', min_side, max_pixels)


def decode_image(data: Optional[bytes], name: str, min_side: int = 1, max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) as ``(H, W, 3)`` float32 BGR in [0, 1]; :class:`ImageReadError`
    starts with ``name`` (``image file <path>``, ``key <k> of lmdb <db>``) when they are empty, corrupt, truncated,
    too small, or declare more than ``max_pixels`` in their header (default: the process-wide limit of
    :mod:`drward.utils.image_header`; checked before anything is decoded)."""
    if not data:
        raise ImageReadError(f'cannot decode {name}: it is empty')
    try:
        check_image_bytes(data, name, max_pixels)
    except UnsafeImageError as error:
        raise ImageReadError(str(error)) from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f'cannot decode {name}: corrupt, truncated or not an image')
    if min(img.shape[:2]) < min_side:
        raise ImageReadError(f'{name} is {img.shape[1]}x{img.shape[0]} pixels, under the minimum side {min_side}')
    return _to_float_bgr(img, name)


def _to_float_bgr(img: np.ndarray, path: str) -> np.ndarray:
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[2]
    if channels in (1, 2):  # grey, grey + alpha
        img = np.repeat(img[..., :1], 3, axis=2)
    elif channels == 4:
        img = img[..., :3]
    elif channels != 3:
        raise ImageReadError(f'{path} has {channels} channels; expected 1, 2, 3 or 4')
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return np.clip(img.astype(np.float32), 0.0, 1.0)


def fit_square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop ``img`` to a square and resize it to ``size × size`` (area filter down, bicubic up)."""
    height, width = img.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    img = img[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(img)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.clip(cv2.resize(img, (size, size), interpolation=interpolation), 0.0, 1.0)


def list_images(folder: str) -> List[str]:
    """The image files directly in ``folder``, sorted by name; :class:`ImageListError` if missing or empty."""
    if not os.path.isdir(folder):
        raise ImageListError(f'image folder {folder} does not exist')
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ImageListError(f'image folder {folder} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
    return [os.path.join(folder, name) for name in names]


def read_meta_file(meta_file: str, root: Optional[str] = None) -> List[str]:
    """Image paths listed in a meta file, one per line, joined to ``root`` (default: the meta file's folder).

    BasicSR's ``name (h,w,c)`` and lmdb ``name (h,w,c) compress_level`` lines are accepted (shape and level are
    ignored), as are ``path<TAB>anything`` lines.
    """
    names = read_meta_names(meta_file)
    root = os.path.dirname(os.path.abspath(meta_file)) if root is None else root
    return [name if os.path.isabs(name) else os.path.join(root, name) for name in names]


def read_meta_names(meta_file: str) -> List[str]:
    """The names a meta file lists (see :func:`read_meta_file`), as written; :class:`ImageListError` if none."""
    try:
        with open(meta_file, encoding='utf-8') as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        raise ImageListError(f'cannot read meta file {meta_file}: {error.strerror or error}') from error
    names = [re.sub(r'\s+\(\d+,\s*\d+,\s*\d+\)(\s+\d+)?\s*$', '', line.split('\t')[0]).strip() for line in lines]
    names = [name for name in names if name]
    if not names:
        raise ImageListError(f'meta file {meta_file} lists no images')
    return names


def read_caption_file(path: str) -> Dict[str, str]:
    """Read a caption file: JSON ``{name: caption}`` (``.json``) or TSV ``name<TAB>caption`` lines (any other name)."""
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
    except OSError as error:
        raise CaptionFileError(f'cannot read caption file {path}: {error.strerror or error}') from error
    if path.lower().endswith('.json'):
        return _parse_json_captions(text, path)
    return _parse_tsv_captions(text, path)


def _parse_json_captions(text: str, path: str) -> Dict[str, str]:
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise CaptionFileError(f'caption file {path} is not valid JSON: {error}') from error
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise CaptionFileError(f'caption file {path} must hold a JSON object mapping image name to caption text')
    return {str(name): caption.strip() for name, caption in mapping.items()}


def _parse_tsv_captions(text: str, path: str) -> Dict[str, str]:
    mapping = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if '\t' not in line:
            raise CaptionFileError(f'caption file {path} line {number}: expected "name<TAB>caption"')
        name, caption = line.split('\t', 1)
        mapping[name.strip()] = caption.strip()
    return mapping


def caption_beside(image_path: str) -> Optional[str]:
    """The text of ``<image stem>.txt`` next to the image, or None if that file is absent or blank."""
    text_path = os.path.splitext(image_path)[0] + '.txt'
    if not os.path.isfile(text_path):
        return None
    with open(text_path, encoding='utf-8') as handle:
        caption = handle.read().strip()
    return caption or None


def lookup_caption(image_path: str, captions: Mapping[str, str]) -> Optional[str]:
    """The caption of ``image_path`` in ``captions``, keyed by file name or by stem; None if absent or blank."""
    name = os.path.basename(image_path)
    caption = captions.get(name) or captions.get(os.path.splitext(name)[0])
    return caption or None
