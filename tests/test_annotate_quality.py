"""The per-image quality metrics respond to the degradation each one is meant to measure; the registry's errors."""
import cv2
import numpy as np
import pytest

from drward.annotate import quality
from drward.data.demo_faces import demo_face_recipes, render_demo_face
from drward.utils.options import MissingWeightsError, OptionError


@pytest.fixture(scope='module')
def face():
    return render_demo_face(demo_face_recipes(1)[0], 128)  # the astronaut's face, RGB uint8


def _noisy(image, sigma, seed=0):
    """Grey Gaussian noise of std ``sigma`` (the same in every channel, so the grey image carries all of it)."""
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape[:2] + (1,))
    return np.clip(image.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


def _jpeg(image, quality_level):
    _, data = cv2.imencode('.jpg', image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality_level])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def test_sharpness_falls_with_blur(face):
    blurred = cv2.GaussianBlur(face, (0, 0), 2.0)
    assert quality.sharpness(face) > quality.sharpness(blurred) + 1.0


def test_noise_sigma_estimates_added_noise_on_a_flat_image():
    flat = np.full((96, 96, 3), 128, np.uint8)
    assert quality.noise_sigma(flat) == 0.0
    assert quality.noise_sigma(_noisy(flat, 10.0)) == pytest.approx(10.0, rel=0.15)


def test_noise_sigma_rises_with_noise_on_a_face(face):
    assert quality.noise_sigma(_noisy(face, 12.0)) > quality.noise_sigma(face) + 5.0


def test_blockiness_sees_strong_jpeg(face):
    assert quality.blockiness(face) == pytest.approx(1.0, abs=0.15)
    assert quality.blockiness(_jpeg(face, 10)) > quality.blockiness(face) + 0.2


def test_colourfulness_is_zero_for_grey_and_positive_for_colour(face):
    grey = np.repeat(face.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    assert quality.colourfulness(grey) == pytest.approx(0.0, abs=1e-9)
    assert quality.colourfulness(face) > 5.0


def test_hf_energy_is_higher_for_noise_than_for_blur(face):
    assert quality.hf_energy(_noisy(face, 10.0)) > quality.hf_energy(cv2.GaussianBlur(face, (0, 0), 2.0)) + 0.3


def test_niqe_runs_on_images_smaller_than_its_blocks(face):
    small = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.isfinite(quality.niqe(small))
    assert quality.niqe(cv2.GaussianBlur(face, (0, 0), 3.0)) > quality.niqe(face)


def test_presets_have_six_metrics_and_expand():
    assert all(len(names) == 6 for names in quality.METRIC_SETS.values())
    assert quality.expand_metric_names('no_face') == list(quality.METRIC_SETS['no_face'])
    assert quality.expand_metric_names('niqe, sharpness') == ['niqe', 'sharpness']
    assert [m.name for m in quality.build_metrics('no_face')] == list(quality.METRIC_SETS['no_face'])


@pytest.mark.parametrize('names, weights, fragment', [
    ('niqe,brisk', None, "unknown quality metric 'brisk'"),
    ('niqe,niqe', None, 'duplicates'),
    ('niqe', {'pyiqa:musiq': 'x.pth'}, 'not in the metric list'),
    ('niqe,pyiqa:musiq', None, 'needs a local weight file'),
])
def test_metric_list_errors_say_what_is_accepted(names, weights, fragment):
    with pytest.raises(OptionError, match=fragment):
        quality.build_metrics(names, weights)


def test_learned_metric_with_missing_weights_stops_with_one_line_naming_the_file(tmp_path):
    missing = str(tmp_path / 'musiq_koniq.pth')
    with pytest.raises(MissingWeightsError) as err:
        quality.build_metrics('niqe,pyiqa:musiq', {'pyiqa:musiq': missing})
    message = str(err.value)
    assert missing in message and 'metric_weights.pyiqa:musiq' in message and '\n' not in message


def test_identity_and_landmark_metrics_compare_with_the_reference(face):
    pytest.importorskip('dlib')
    face_options = quality.FaceModelOptions(face_box='full')
    identity, landmarks = quality.build_metrics('identity_similarity,landmark_distance', face=face_options)
    assert identity.needs_reference and landmarks.needs_reference
    assert identity.compute(face, face) == pytest.approx(1.0, abs=1e-6)
    assert landmarks.compute(face, face) == pytest.approx(0.0, abs=1e-9)
    shifted = np.roll(face, 6, axis=1)
    assert landmarks.compute(shifted, face) > 2.0
    detect_identity, = quality.build_metrics('identity_similarity', face=quality.FaceModelOptions(face_box='detect'))
    assert np.isnan(detect_identity.compute(np.full_like(face, 127), face))  # no face found → nan


def test_pyiqa_metric_loads_the_local_weight_file(face, tmp_path):
    pyiqa = pytest.importorskip('pyiqa')
    import torch
    reference = pyiqa.create_metric('musiq', device='cpu', pretrained=False)  # seeded random weights, no download
    with torch.no_grad():  # move away from pyiqa's seeded initialisation, so only loading the file can match
        for parameter in reference.net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    torch.save(reference.net.state_dict(), tmp_path / 'musiq_local.pth')
    musiq, = quality.build_metrics('pyiqa:musiq', {'pyiqa:musiq': str(tmp_path / 'musiq_local.pth')})
    assert musiq.higher_is_better and str(tmp_path) in musiq.version  # the file is part of the cache key
    small = np.ascontiguousarray(face[::2, ::2])
    with torch.no_grad():
        expected = float(reference(torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255.0))
    assert musiq.compute(small, None) == pytest.approx(expected, rel=1e-5)


def test_memo_by_content_analyses_an_image_once_and_tells_images_apart():
    calls = []
    memo = quality.memo_by_content(lambda image: calls.append(1) or float(image.sum()), maxsize=2)
    first, second = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)
    assert [memo(first), memo(first.copy()), memo(second), memo(first)] == [0.0, 0.0, 48.0, 0.0]
    assert len(calls) == 2
    memo(np.full((4, 4, 3), 2, np.uint8))  # a third image pushes out the least recently used (second)
    memo(second)
    assert len(calls) == 4
