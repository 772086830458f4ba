"""Bad files in a training folder: converted when possible, skipped with a warning naming them when not, and a
clear stop only when more than max_bad_fraction of the set is bad."""
import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from drward.data.bad_images import TooManyBadImagesError
from drward.data.face_degradation_dataset import FaceDegradationDataset
from drward.data.image_io import read_image

SIZE = 32


@pytest.fixture
def warnings_log():
    """The messages BasicSR's logger (which does not propagate to pytest's caplog) warns with."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger('basicsr')
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _dataset(folder, **extra):
    return FaceDegradationDataset({'name': 'faces', 'type': 'FaceDegradationDataset', 'phase': 'val',
                                   'dataroot_gt': str(folder), 'gt_size': SIZE, 'seed': 0, **extra})


def _good(folder, count):
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f'good_{i:02d}.png'), rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


def test_grey_grey_alpha_rgba_and_16_bit_images_are_converted(tmp_path):
    rng = np.random.default_rng(1)
    images = {'grey.png': rng.integers(0, 255, (SIZE, SIZE), dtype=np.uint8),
              'grey_alpha.png': rng.integers(0, 255, (SIZE, SIZE, 2), dtype=np.uint8),
              'rgba.png': rng.integers(0, 255, (SIZE, SIZE, 4), dtype=np.uint8),
              'deep.png': rng.integers(0, 65535, (SIZE, SIZE, 3), dtype=np.uint16)}
    for name, pixels in images.items():
        if pixels.ndim == 3 and pixels.shape[2] == 2:  # OpenCV writes no grey + alpha PNG; PIL does (mode LA)
            Image.fromarray(pixels, mode='LA').save(tmp_path / name)
        else:
            assert cv2.imwrite(str(tmp_path / name), pixels), name
    for name, pixels in images.items():
        img = read_image(str(tmp_path / name))
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.float32, name
        first = pixels if pixels.ndim == 2 else pixels[..., 0]
        scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
        np.testing.assert_array_equal(img[..., 0], first.astype(np.float32) / np.float32(scale))  # same formula
    dataset = _dataset(tmp_path)
    assert all(dataset[i]['gt'].shape == (3, SIZE, SIZE) for i in range(len(dataset)))


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty', 'tiny'])
def test_a_bad_file_is_skipped_with_a_warning_naming_it(tmp_path, damage, warnings_log):
    _good(tmp_path, 19)
    bad = tmp_path / 'good_05_bad.png'  # sorts between good_05 and good_06: index 6
    payload = cv2.imencode('.png', np.zeros((SIZE, SIZE, 3), np.uint8))[1].tobytes()
    if damage == 'tiny':
        cv2.imwrite(str(bad), np.zeros((3, 5, 3), np.uint8))
    else:
        bad.write_bytes({'truncated': payload[:len(payload) // 2], 'garbage': b'not an image' * 9,
                         'empty': b''}[damage])
    dataset = _dataset(tmp_path)
    assert dataset.gt_paths[6] == str(bad)
    item = dataset[6]
    assert item['gt_path'] == str(tmp_path / 'good_06.png')  # the next readable face takes its place
    assert len(warnings_log) == 1 and str(bad) in warnings_log[0] and 'skipping' in warnings_log[0]
    dataset[6]
    assert len(warnings_log) == 1  # warned once per file
    assert dataset.guard.skipped == [str(bad)]


def test_more_bad_files_than_the_allowed_fraction_stop_with_a_clear_error(tmp_path):
    _good(tmp_path, 8)
    for i in range(2):
        (tmp_path / f'zz_bad_{i}.png').write_bytes(b'')
    dataset = _dataset(tmp_path, max_bad_fraction=0.2)  # 2 of 10 bad: allowed
    [dataset[i] for i in range(len(dataset))]
    dataset = _dataset(tmp_path, max_bad_fraction=0.1)  # 2 of 10 bad: too many
    with pytest.raises(TooManyBadImagesError, match=r'2 of 10 images are unreadable.*zz_bad_0.png; .*zz_bad_1.png'):
        [dataset[i] for i in range(len(dataset))]
