"""Face metrics on real photos (scikit-image's astronaut and LFW faces): LMD and identity behave as measures should."""
import math

import cv2
import numpy as np
import pytest
from basicsr.metrics import calculate_metric
from skimage import data

from drward.metrics import face_models
from drward.metrics.face_models import (
    build_face_models,
    identity_angle,
    identity_distance,
    identity_similarity,
    landmark_distance,
)
from drward.utils.options import OptionError


def shifted(img, dx, dy=0):
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, matrix, img.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def lfw_face(index, size=150):
    grey = (data.lfw_subset()[index] * 255).astype(np.uint8)
    return np.repeat(cv2.resize(grey, (size, size), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2)


@pytest.fixture(scope='module')
def astronaut():
    return data.astronaut()


@pytest.fixture(scope='module')
def astronaut_landmarks(astronaut):
    return face_models.landmarks_68(astronaut)


def test_landmarks_are_68_points_on_the_face(astronaut_landmarks):
    assert astronaut_landmarks.shape == (68, 2)
    assert (astronaut_landmarks[:, 0] > 150).all() and (astronaut_landmarks[:, 0] < 290).all()


def test_lmd_of_an_image_with_itself_is_zero(astronaut, astronaut_landmarks):
    assert landmark_distance(astronaut_landmarks, face_models.landmarks_68(astronaut.copy())) == 0.0


@pytest.mark.parametrize('k', [3, 8])
def test_lmd_of_an_image_shifted_by_k_pixels_is_about_k(astronaut, astronaut_landmarks, k):
    lmd = landmark_distance(astronaut_landmarks, face_models.landmarks_68(shifted(astronaut, k)))
    assert abs(lmd - k) < 1.0


def test_lmd_is_the_mean_point_distance():
    a = np.zeros((68, 2))
    b = a.copy()
    b[:34, 0] = 3.0
    b[34:, 1] = 4.0
    assert landmark_distance(a, b) == pytest.approx(3.5)
    with pytest.raises(ValueError):
        landmark_distance(a, b[:5])


def test_identity_of_a_face_with_itself_beats_another_person(astronaut):
    own = face_models.identity_embedding(astronaut)
    same_degraded = face_models.identity_embedding(cv2.GaussianBlur(astronaut, (0, 0), 1.5))
    others = [build_face_models(face_box='full').identity_embedding(lfw_face(i)) for i in (0, 30, 60)]
    assert own.shape == (128,)
    assert identity_similarity(own, own) == pytest.approx(1.0)
    for other in others:
        assert identity_similarity(own, same_degraded) > identity_similarity(own, other)
        assert identity_distance(own, same_degraded) < identity_distance(own, other)
        assert identity_angle(own, same_degraded) < identity_angle(own, other)
    assert identity_distance(own, same_degraded) < 0.6  # dlib's same-person threshold


def test_no_face_gives_none_when_detecting_and_a_box_when_aligned():
    blank = np.full((256, 256, 3), 90, np.uint8)
    assert face_models.landmarks_68(blank) is None
    assert face_models.identity_embedding(blank) is None
    assert build_face_models(face_box='aligned').landmarks_68(blank).shape == (68, 2)


def test_registered_metrics_take_basicsr_bgr_images_and_give_nan_without_a_face(astronaut):
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    pair = {'img': bgr, 'img2': shifted(bgr, 5)}
    lmd = calculate_metric(pair, {'type': 'calculate_lmd', 'face_box': 'detect'})
    assert abs(lmd - 5) < 1.0
    ids = calculate_metric({'img': bgr, 'img2': bgr}, {'type': 'calculate_ids', 'measure': 'similarity',
                                                       'face_box': 'detect'})
    assert ids == pytest.approx(1.0)
    blank = np.full_like(bgr, 90)
    assert math.isnan(calculate_metric({'img': blank, 'img2': bgr}, {'type': 'calculate_lmd', 'face_box': 'detect'}))


def test_rgb_order_matters_for_the_registered_metric(astronaut):
    """The metric converts BGR to RGB: feeding the RGB array as if it were BGR changes the descriptor."""
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    swapped = calculate_metric({'img': astronaut, 'img2': bgr}, {'type': 'calculate_ids', 'measure': 'distance',
                                                                 'face_box': 'detect'})
    assert swapped > 0.01


def test_unknown_option_lists_accepted_keys(astronaut):
    with pytest.raises(OptionError, match='accepted keys'):
        calculate_metric({'img': astronaut, 'img2': astronaut}, {'type': 'calculate_lmd', 'face_boxx': 'detect'})


def test_auto_backend_is_dlib_without_facexlib_weights(tmp_path):
    models = build_face_models('auto', str(tmp_path), 'aligned')
    assert models.backend.startswith('dlib')


def test_auto_backend_is_facexlib_when_both_weight_files_are_present(tmp_path):
    for name in (face_models.ARCFACE_FILE, face_models.AWING_FILE):
        (tmp_path / name).write_bytes(b'')  # presence decides; the models load lazily on first use
    assert build_face_models('auto', str(tmp_path), 'aligned').backend.startswith('facexlib')
