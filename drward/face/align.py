"""Warp a face to a template and paste a restored face back.

Alignment is a similarity transform (rotation, uniform scale, translation) ``A`` (2×3) fitted by least squares
(LMedS) from the five detected landmarks to the template's: ``aligned = warp(img, A)``. Paste-back warps the
restored face with ``A⁻¹`` and blends it over the image with a soft mask,

    out = m ⊙ warp(face, A⁻¹) + (1 − m) ⊙ img,   m = blur(erode(warp(1, A⁻¹))),

so pixels outside the warped face square (plus the blur margin) keep their exact input values.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from drward.face.template import face_template


def similarity_to_template(landmarks5: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The 2×3 similarity matrix ``A`` mapping the image's five points onto ``template``."""
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks5, np.float64), np.asarray(template, np.float64),
                                            method=cv2.LMEDS)
    if matrix is None:
        raise ValueError('cannot fit a similarity transform to these landmarks')
    return matrix


def warp_face(img: np.ndarray, matrix: np.ndarray, size: int, border: str = 'constant') -> np.ndarray:
    """Apply ``matrix`` and crop a ``size``² face (border ``'constant'`` = black, or ``'reflect'``)."""
    mode = cv2.BORDER_CONSTANT if border == 'constant' else cv2.BORDER_REFLECT101
    return cv2.warpAffine(img, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)


def align_face(img: np.ndarray, landmarks5: np.ndarray, size: int = 512, border: str = 'constant'):
    """``(aligned face, A)``: the face of ``img`` warped to the FFHQ template at ``size``²."""
    matrix = similarity_to_template(landmarks5, face_template(size))
    return warp_face(img, matrix, size, border), matrix


def blend_mask(matrix: np.ndarray, face_size: int, height: int, width: int,
               erode_ratio: float = 1 / 64, blur_ratio: float = 1 / 32) -> np.ndarray:
    """The soft paste mask ``m`` (H, W, 1) float32 in [0, 1]: the face square warped back, eroded, then blurred."""
    inverse = cv2.invertAffineTransform(matrix)
    square = np.ones((face_size, face_size), np.float32)
    mask = cv2.warpAffine(square, inverse, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # face pixels → image pixels
    erode = max(1, int(round(face_size * scale * erode_ratio)))
    mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    blur = max(1, int(round(face_size * scale * blur_ratio)))
    mask = cv2.GaussianBlur(mask, (2 * blur + 1, 2 * blur + 1), 0)
    mask[mask < 1e-3] = 0.0
    return mask[..., None]


def paste_face(img: np.ndarray, face: np.ndarray, matrix: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Blend the restored aligned ``face`` into ``img`` (keeping its dtype) through the inverse of ``matrix``."""
    height, width = img.shape[:2]
    size = face.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    back = cv2.warpAffine(face.astype(np.float32), inverse, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    mask = blend_mask(matrix, size, height, width) if mask is None else mask
    if back.ndim == 2:
        back = back[..., None]
    blended = mask * back.reshape(height, width, -1) + (1 - mask) * img.astype(np.float32).reshape(height, width, -1)
    out = np.where(mask > 0, blended, img.astype(np.float32).reshape(height, width, -1)).reshape(img.shape)
    if np.issubdtype(img.dtype, np.integer):
        out = np.clip(np.round(out), 0, np.iinfo(img.dtype).max)
    return out.astype(img.dtype)
