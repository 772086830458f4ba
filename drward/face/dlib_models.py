"""dlib's face models from the ``face-recognition-models`` package: present after ``pip install``, no download.

* the HOG frontal face detector (built into dlib);
* the 68-point shape predictor (iBUG 300-W layout);
* the ResNet face-recognition model giving 128-D identity descriptors (same person: distance < 0.6).

Each model is loaded once per process.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

Box = Tuple[int, int, int, int]  # left, top, right, bottom (pixels, inclusive)


def _models_package():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # face_recognition_models imports the deprecated pkg_resources
        import face_recognition_models
    return face_recognition_models


@lru_cache(maxsize=1)
def hog_detector():
    import dlib
    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def shape_predictor_68():
    import dlib
    return dlib.shape_predictor(_models_package().pose_predictor_model_location())


@lru_cache(maxsize=1)
def face_encoder():
    import dlib
    return dlib.face_recognition_model_v1(_models_package().face_recognition_model_location())


def detect_boxes(img_rgb: np.ndarray, upsample: int = 1) -> List[Tuple[Box, float]]:
    """HOG detections ``[(box, score), ...]`` sorted by score, best first."""
    rects, scores, _ = hog_detector().run(np.ascontiguousarray(img_rgb), upsample, 0.0)
    found = [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
    return sorted(found, key=lambda item: -item[1])


def _rect(box: Box):
    import dlib
    return dlib.rectangle(*[int(v) for v in box])


def _shape(img_rgb: np.ndarray, box: Box):
    return shape_predictor_68()(np.ascontiguousarray(img_rgb), _rect(box))


def landmarks_in_box(img_rgb: np.ndarray, box: Box) -> np.ndarray:
    """The (68, 2) float landmarks ``(x, y)`` the shape predictor fits inside ``box``."""
    shape = _shape(img_rgb, box)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def descriptor_in_box(img_rgb: np.ndarray, box: Box, num_jitters: int = 0) -> np.ndarray:
    """The 128-D identity descriptor of the face in ``box`` (dlib aligns the chip from the 68-point shape)."""
    img = np.ascontiguousarray(img_rgb)
    return np.asarray(face_encoder().compute_face_descriptor(img, _shape(img, box), num_jitters), dtype=np.float64)


def best_box(img_rgb: np.ndarray, upsample: int = 1) -> Optional[Box]:
    """The highest-scoring HOG box, or None when no face is found."""
    found = detect_boxes(img_rgb, upsample)
    return found[0][0] if found else None


def memo_by_content(fn: Callable[[np.ndarray], Any], maxsize: int = 64) -> Callable[[np.ndarray], Any]:
    """``fn`` remembering its last ``maxsize`` results by the array's shape and a hash of its bytes.

    The HOG box of an image is then found once for both its identity and its landmarks
    (:class:`drward.metrics.face_models.DlibFaceModels`), and the reference image of many annotation pairs is
    analysed once, not once per pair.
    """
    results: 'OrderedDict[tuple, Any]' = OrderedDict()

    def wrapped(image: np.ndarray) -> Any:
        key = (image.shape, hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest())
        if key not in results:
            results[key] = fn(image)
            if len(results) > maxsize:
                results.popitem(last=False)
        results.move_to_end(key)
        return results[key]

    return wrapped
