"""In-the-wild faces: detect → align to the FFHQ template → restore → paste back.

:class:`WildFaceRestorer` wraps any function that restores a batch of aligned faces (``(N, S, S, 3)`` RGB uint8 →
same shape) and applies it to every face found in a whole photo. The background is kept (optionally resized by
``upscale`` with bicubic interpolation); each restored face is blended back with the soft mask of
:func:`drward.face.align.paste_face`, so pixels away from the faces are untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List

import cv2
import numpy as np

from drward.face.align import align_face, paste_face, similarity_to_template
from drward.face.detect import DETECTOR_BACKENDS, DetectedFace, build_face_detector, select_faces
from drward.face.template import face_template
from drward.utils.option_schema import Bool, Choice, Int, Num, Option, Text

RestoreFaces = Callable[[np.ndarray], np.ndarray]


#: ``val.face_align``: in-the-wild photos (detection, alignment, paste-back: this module).
FACE_ALIGN_OPTIONS = {
    'enabled': Option(Bool(), False, 'detect, align and paste back the faces of whole photos'),
    'face_size': Option(Int(8), 512, 'side of the aligned face crops'),
    'upscale': Option(Int(1), 1, 'the whole photo is upscaled by this factor'),
    'select': Option(Text(), 'largest', 'which faces: largest, all, ...'),
    'detector': Option(Choice(*DETECTOR_BACKENDS), 'auto', 'face detector backend'),
    'weights_dir': Option(Text(nullable=True), 'weights/facexlib', "the detector's weight folder"),
    'min_face': Option(Num(0), 16.0, 'faces smaller than this (pixels) are left alone'),
}


@dataclass
class WildResult:
    """The pasted image, the aligned inputs and outputs, and the detections (in input coordinates)."""

    image: np.ndarray
    faces: List[DetectedFace] = field(default_factory=list)
    aligned: List[np.ndarray] = field(default_factory=list)
    restored: List[np.ndarray] = field(default_factory=list)


class WildFaceRestorer:
    """Detect, align (``face_size``²), restore and paste back every selected face of an RGB uint8 photo."""

    def __init__(self, detector=None, face_size: int = 512, upscale: int = 1, select: str = 'all',
                 min_face: float = 16.0):
        self.detector = detector if detector is not None else build_face_detector()
        self.face_size = face_size
        self.upscale = upscale
        self.select = select
        self.min_face = min_face

    def __call__(self, img_rgb: np.ndarray, restore_faces: RestoreFaces) -> WildResult:
        found = self.detect_and_align(img_rgb)
        if not found.faces:
            return found
        return self.paste(found, list(restore_faces(np.stack(found.aligned))))

    def detect_and_align(self, img_rgb: np.ndarray) -> WildResult:
        """The first half: the selected faces, their aligned crops, and the background (upscaled); ``image`` is the
        background, ``restored`` still empty (:meth:`paste` finishes; a caller may batch the crops of several
        photos in between)."""
        faces = select_faces(self.detector.detect(img_rgb), self.select, self.min_face)
        background = img_rgb
        if self.upscale != 1:
            height, width = img_rgb.shape[:2]
            background = cv2.resize(img_rgb, (width * self.upscale, height * self.upscale),
                                    interpolation=cv2.INTER_CUBIC)
        aligned = [align_face(img_rgb, face.landmarks5, self.face_size)[0] for face in faces]
        return WildResult(background, faces, aligned)

    def paste(self, found: WildResult, restored: List[np.ndarray]) -> WildResult:
        """The second half: each restored face blended back into ``found.image`` with its soft mask."""
        out = found.image
        for face, face_img in zip(found.faces, restored):
            matrix = similarity_to_template(face.landmarks5 * self.upscale, face_template(self.face_size))
            out = paste_face(out, face_img, matrix)
        return WildResult(out, found.faces, found.aligned, list(restored))
