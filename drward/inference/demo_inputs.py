"""Two inputs to try ``tools/restore.py`` on without a photo of one's own: a whole photo and an aligned face.

* ``astronaut.png`` — ``skimage.data.astronaut()`` (NASA portrait of Eileen Collins, public domain), 512² RGB, as
  it ships in scikit-image;
* ``astronaut_aligned.png`` — its face found by dlib and aligned to the FFHQ template at ``aligned_size``²
  (what ``--aligned`` expects, and what GFPGAN / CodeFormer call a cropped face).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import List

import cv2
import numpy as np

from drward.face.align import align_face
from drward.face.detect import DlibFaceDetector


def write_demo_inputs(folder: str, aligned_size: int = 512) -> List[str]:
    """Write the two demo inputs into ``folder``; returns their paths."""
    from skimage import data
    photo = data.astronaut()
    faces = DlibFaceDetector().detect(photo)
    if not faces:
        raise RuntimeError('dlib found no face in skimage.data.astronaut()')
    aligned, _ = align_face(photo, faces[0].landmarks5, aligned_size)
    os.makedirs(folder, exist_ok=True)
    paths = [osp.join(folder, 'astronaut.png'), osp.join(folder, 'astronaut_aligned.png')]
    for path, img in zip(paths, (photo, aligned)):
        if not cv2.imwrite(path, np.ascontiguousarray(img[..., ::-1])):
            raise OSError(f'cannot write {path}')
    return paths
