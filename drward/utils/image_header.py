"""Check an encoded image from its header before decoding it: declared size, format, truncation.

A 0.6 MB PNG can declare 24,000 × 24,000 pixels; decoding it takes 1.7 GB as 8-bit RGB and ~7 GB once converted to
float, which is how one hostile file took ``tools/restore.py`` to 21.6 GB (docs/reliability.md). Every image reader
of drward (:func:`drward.data.image_io.decode_image`, the lmdb packer's probe) calls :func:`check_image_bytes` first:

* the header is read lazily by PIL (``Image.open`` parses the header only); ``width × height`` over the pixel limit
  raises :class:`ImageTooLargeError` at once, with the declared size and the limit — nothing is decoded;
* PIL's own bomb guard (``Image.MAX_IMAGE_PIXELS``; it raises ``DecompressionBombError`` beyond twice that) is
  caught and reported the same way; its warning is silenced, as our limit is the one that applies;
* bytes PIL cannot identify are "not an image"; a JPEG is decoded once at 1/8 scale (``draft``, cheap: the DCT
  scaling skips most of the work, but the whole entropy-coded stream is read) and a PNG's chunks are verified, so
  that a truncated file is refused where OpenCV would silently return an image padded with grey.

The pixel limit is :data:`DEFAULT_MAX_PIXELS` (8192 × 8192 ≈ 67 megapixels, about 0.8 GB as float RGB), or the
``DRWARD_MAX_IMAGE_PIXELS`` environment variable, or what a tool set with :func:`set_max_pixels` (``--max-pixels``),
or a dataset's ``max_image_pixels`` option passed per call.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from typing import Optional, Tuple

DEFAULT_MAX_PIXELS = 8192 * 8192
_max_pixels: Optional[int] = None


class UnsafeImageError(OSError):
    """An encoded image is refused before decoding: not an image, truncated, or over the pixel limit."""


class ImageTooLargeError(UnsafeImageError):
    """The header declares more pixels than the limit."""


def max_pixels() -> int:
    """The process-wide pixel limit: :func:`set_max_pixels`, else ``DRWARD_MAX_IMAGE_PIXELS``, else the default."""
    if _max_pixels is not None:
        return _max_pixels
    return int(os.environ.get('DRWARD_MAX_IMAGE_PIXELS', DEFAULT_MAX_PIXELS))


def set_max_pixels(limit: Optional[int]) -> None:
    """Set the process-wide pixel limit (None: back to the environment / default); must be positive."""
    global _max_pixels
    if limit is not None and int(limit) <= 0:
        raise ValueError(f'the image pixel limit must be positive, got {limit}')
    _max_pixels = None if limit is None else int(limit)


def _megapixels(n: int) -> str:
    return f'{n / 1e6:.1f} megapixels'


def check_image_bytes(data: bytes, name: str, limit: Optional[int] = None) -> Tuple[int, int]:
    """``(width, height)`` declared by the header of ``data`` when it is a whole image within ``limit`` pixels
    (default :func:`max_pixels`); else :class:`UnsafeImageError` whose message starts with ``name``."""
    from PIL import Image, UnidentifiedImageError
    limit = max_pixels() if limit is None else int(limit)
    if not data:
        raise UnsafeImageError(f'cannot decode {name}: it is empty')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
    except Image.DecompressionBombError as error:  # beyond twice PIL's own limit: its message holds the count
        found = re.search(r'\((\d+) pixels\)', str(error))
        declared = _megapixels(int(found.group(1))) if found else 'more pixels than PIL accepts'
        raise ImageTooLargeError(f'{name} declares {declared}, over the limit of {_megapixels(limit)}: refused '
                                 'before decoding (a decompression bomb?; raise the limit with --max-pixels / '
                                 'max_image_pixels)') from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UnsafeImageError(f'cannot decode {name}: not an image (no image header PIL knows: '
                               f'{str(error).splitlines()[0][:80]})') from None
    if width * height > limit:
        raise ImageTooLargeError(f'{name} declares {width}x{height} pixels ({_megapixels(width * height)}), over '
                                 f'the limit of {_megapixels(limit)}: refused before decoding (raise it with '
                                 '--max-pixels / max_image_pixels)')
    _check_complete(image, data, name)
    return width, height


def _check_complete(image, data: bytes, name: str) -> None:
    """Refuse a truncated JPEG (decoded at 1/8 scale) or PNG (chunks and CRCs verified)."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            if image.format == 'JPEG':
                image.draft(image.mode, (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
                image.load()
            elif image.format == 'PNG':
                Image.open(io.BytesIO(data)).verify()
    except (OSError, SyntaxError, ValueError) as error:
        raise UnsafeImageError(f'cannot decode {name}: truncated or corrupt {image.format} '
                               f'({str(error).splitlines()[0][:80]})') from None


def add_max_pixels_argument(parser) -> None:
    """``--max-pixels N``: the pixel limit of every image this tool reads (its header is checked before decoding)."""
    parser.add_argument('--max-pixels', type=int, default=None,
                        help=f'refuse images whose header declares more pixels than this, before decoding them '
                             f'(default {DEFAULT_MAX_PIXELS:,} = 8192x8192, or $DRWARD_MAX_IMAGE_PIXELS)')


def apply_max_pixels(args) -> None:
    """Set the process-wide limit from ``--max-pixels`` (when given)."""
    if getattr(args, 'max_pixels', None) is not None:
        set_max_pixels(args.max_pixels)
