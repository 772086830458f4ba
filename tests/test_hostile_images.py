"""Hostile image files through every reader: a decompression bomb (a 0.57 MB PNG declaring 24,000² pixels), a
truncated JPEG, a text file named .png. Each is refused from its header (nothing decoded) with a message naming it,
and the other images go on (issue 32 §4)."""
import logging
import os
import sys

import cv2
import numpy as np
import pytest

from drward.data import image_io
from drward.data.face_degradation_dataset import FaceDegradationDataset
from drward.utils import image_header
from drward.utils.image_header import ImageTooLargeError, UnsafeImageError, check_image_bytes

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
from benchmarks.lib.hostile_files import astronaut_jpeg, bomb_png, not_an_image, truncated_jpeg  # noqa: E402

SIZE = 32


@pytest.fixture(scope='module')
def bomb():
    return bomb_png()


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail if OpenCV is asked to decode anything (a refusal must come from the header)."""
    def refuse(*args, **kwargs):
        raise AssertionError('cv2.imdecode called on a refused file')
    monkeypatch.setattr(cv2, 'imdecode', refuse)


@pytest.fixture
def hostile_folder(tmp_path, bomb):
    folder = tmp_path / 'photos'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f'good_{i}.png'), rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    (folder / 'bomb.png').write_bytes(bomb)
    (folder / 'cut.jpg').write_bytes(truncated_jpeg())
    (folder / 'notes.png').write_bytes(not_an_image())
    return folder


def test_the_bomb_is_refused_from_its_header(bomb, no_decoding):
    assert len(bomb) < 600_000
    with pytest.raises(ImageTooLargeError, match=r'bomb\.png declares 576\.0 megapixels, over the limit of '
                                                 r'67\.1 megapixels: refused before decoding'):
        check_image_bytes(bomb, 'bomb.png')
    with pytest.raises(image_io.ImageReadError, match='bomb.png declares 576.0 megapixels'):
        image_io.decode_image(bomb, 'image file bomb.png')


def test_the_pixel_limit_is_the_option_the_flag_or_the_environment(monkeypatch, no_decoding):
    png = cv2.imencode('.png', np.zeros((60, 50, 3), np.uint8))[1].tobytes()
    assert check_image_bytes(png, 'small.png', limit=3000) == (50, 60)
    with pytest.raises(ImageTooLargeError, match=r'small\.png declares 50x60 pixels \(0\.0 megapixels\), over the '
                                                 r'limit of 0\.0 megapixels'):
        check_image_bytes(png, 'small.png', limit=2999)
    monkeypatch.setenv('DRWARD_MAX_IMAGE_PIXELS', '100')
    assert image_header.max_pixels() == 100
    image_header.set_max_pixels(5000)
    try:
        assert image_header.max_pixels() == 5000 and check_image_bytes(png, 'small.png') == (50, 60)
    finally:
        image_header.set_max_pixels(None)
    with pytest.raises(ValueError, match='positive'):
        image_header.set_max_pixels(0)


def test_truncated_and_non_images_get_a_clear_message():
    with pytest.raises(UnsafeImageError, match=r'cannot decode cut\.jpg: truncated or corrupt JPEG'):
        check_image_bytes(truncated_jpeg(), 'cut.jpg')
    png = cv2.imencode('.png', np.zeros((40, 40, 3), np.uint8))[1].tobytes()
    with pytest.raises(UnsafeImageError, match=r'cut\.png: truncated or corrupt PNG'):
        check_image_bytes(png[:len(png) // 2], 'cut.png')
    with pytest.raises(UnsafeImageError, match=r'notes\.png: not an image'):
        check_image_bytes(not_an_image(), 'notes.png')
    with pytest.raises(UnsafeImageError, match='empty'):
        check_image_bytes(b'', 'empty.png')


def test_whole_images_decode_as_before():
    data = astronaut_jpeg()
    assert check_image_bytes(data, 'astronaut.jpg') == (512, 512)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)[..., :3].astype(np.float32) / 255
    assert np.array_equal(image_io.decode_image(data, 'astronaut.jpg'), expected)  # the same decoder as before


def test_restore_tool_skips_them_and_restores_the_others(hostile_folder, tmp_path):
    from drward.inference.photos import PhotoRestorer, input_images
    photos = PhotoRestorer(lambda faces: faces, str(tmp_path / 'out'), aligned=True, face_size=SIZE)
    summary = photos.run(input_images(str(hostile_folder)), progress=False)
    status = {os.path.basename(r.path): (r.status, r.reason) for r in summary.results}
    assert status['good_0.png'][0] == status['good_1.png'][0] == 'restored'
    assert status['bomb.png'][0] == 'skipped' and 'refused before decoding' in status['bomb.png'][1]
    assert status['cut.jpg'][0] == 'skipped' and 'truncated' in status['cut.jpg'][1]
    assert status['notes.png'][0] == 'skipped' and 'not an image' in status['notes.png'][1]
    assert sorted(os.listdir(tmp_path / 'out' / 'restored_imgs')) == ['good_0.png', 'good_1.png']


def test_the_page_refuses_them_with_a_line_each(hostile_folder, tmp_path):
    from drward.inference.page import PageLimits, prepare_uploads
    paths = sorted(str(p) for p in hostile_folder.iterdir())
    kept, notes = prepare_uploads(paths, str(tmp_path / 'uploads'), PageLimits())
    assert [os.path.basename(p) for p in kept] == ['02_good_0.png', '03_good_1.png']
    assert len(notes) == 3 and all('not restored' in n for n in notes)
    assert any(n.startswith('bomb.png:') and 'refused before decoding' in n for n in notes)


def test_make_lmdb_skips_them_and_packs_the_others(hostile_folder, tmp_path):
    from drward.data.lmdb_pack import pack_folder
    report = pack_folder(str(hostile_folder), str(tmp_path / 'faces.lmdb'))
    assert report.images == 2
    skipped = '\n'.join(report.skipped)
    assert 'bomb.png (declares 576.0 megapixels' in skipped and 'cut.jpg (cannot decode: truncated' in skipped
    assert 'notes.png (cannot decode: not an image' in skipped


def test_a_dataset_skips_them_and_serves_the_others(hostile_folder):
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger('basicsr').addHandler(handler)
    try:
        dataset = FaceDegradationDataset({'name': 'faces', 'type': 'FaceDegradationDataset', 'phase': 'val',
                                          'dataroot_gt': str(hostile_folder), 'gt_size': SIZE, 'seed': 0,
                                          'max_bad_fraction': 1.0})
        names = [os.path.basename(dataset[i]['gt_path']) for i in range(len(dataset))]
    finally:
        logging.getLogger('basicsr').removeHandler(handler)
    assert set(names) == {'good_0.png', 'good_1.png'}
    assert any('bomb.png declares 576.0 megapixels' in r for r in records)


def test_a_datasets_max_image_pixels_option_applies(hostile_folder):
    dataset = FaceDegradationDataset({'name': 'faces', 'type': 'FaceDegradationDataset', 'phase': 'val',
                                      'dataroot_gt': str(hostile_folder), 'gt_size': SIZE, 'seed': 0,
                                      'max_image_pixels': SIZE * SIZE - 1})
    good = next(p for p in dataset.gt_paths if p.endswith('good_0.png'))
    with pytest.raises(image_io.ImageReadError, match='declares 32x32 pixels .* over the limit'):
        dataset.source.read(good)


def test_make_candidates_skips_them_and_writes_the_others(hostile_folder, tmp_path):
    from drward.annotate.candidates import CandidateRestorer, make_candidates
    stub = CandidateRestorer('stub', lambda: (lambda face, seed: face))
    counts = make_candidates(str(hostile_folder), str(tmp_path / 'task'), [stub], degraded=1, progress=False)
    assert counts['faces'] == 2 and counts['written'] == 4 and len(counts['skipped']) == 3
    assert sorted(os.listdir(tmp_path / 'task')) == ['face_good_0', 'face_good_1', 'pairs.jsonl']
    assert any('bomb.png declares 576.0 megapixels' in reason for reason in counts['skipped'])
