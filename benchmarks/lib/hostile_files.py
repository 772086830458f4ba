"""Hostile image files for the reliability checks (tests/test_hostile_images.py, benchmarks/page_load.py).

* :func:`bomb_png`: a valid grey PNG declaring ``side × side`` pixels of zeros, about 0.56 MB at 24,000² — the
  decompression bomb of issue 32 (576 megapixels, 1.7 GB decoded as RGB). Built in well under a second: the deflate
  stream of one 40-row block is made once (``Z_FULL_FLUSH`` resets the window, so the bytes are the same for every
  block) and repeated; the zlib checksum of all-zero data of length ``L`` is ``adler32 = (L mod 65521) << 16 | 1``.
* :func:`truncated_jpeg`: a real JPEG (the astronaut) cut at ``fraction`` of its bytes (no end-of-image marker).
* :func:`not_an_image`: text with an image extension.
* :func:`no_face_png`: a smooth gradient (a valid image without a face).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np

BOMB_SIDE = 24000
ROWS_PER_BLOCK = 40


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A grey 8-bit PNG of ``side × side`` zeros (``side`` a multiple of :data:`ROWS_PER_BLOCK`)."""
    if side % ROWS_PER_BLOCK:
        raise ValueError(f'side must be a multiple of {ROWS_PER_BLOCK}, got {side}')
    block = b'\x00' * ((side + 1) * ROWS_PER_BLOCK)  # each row: filter type 0, then the pixels
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    final = raw.flush(zlib.Z_FINISH)
    length = (side + 1) * side
    stream = b'\x78\xda' + segment * (side // ROWS_PER_BLOCK) + final + struct.pack('>I', (length % 65521) << 16 | 1)
    header = struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', header) + _chunk(b'IDAT', stream) + _chunk(b'IEND', b'')


def astronaut_jpeg(quality: int = 90) -> bytes:
    """scikit-image's astronaut (512², a real face) as JPEG bytes."""
    import cv2
    from skimage import data
    ok, encoded = cv2.imencode('.jpg', np.ascontiguousarray(data.astronaut()[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def truncated_jpeg(fraction: float = 0.5) -> bytes:
    data = astronaut_jpeg()
    return data[:int(len(data) * fraction)]


def not_an_image() -> bytes:
    return b'this is a text file, not a photo\n' * 20


def no_face_png(side: int = 256) -> bytes:
    from PIL import Image
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    img = np.stack([np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)), np.full((side, side), 128, np.uint8)],
                   axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format='PNG')
    return buffer.getvalue()
