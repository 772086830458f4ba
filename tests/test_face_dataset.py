"""FaceDegradationDataset and the degradation / image IO it is built from."""
import json
import logging
import os
import random

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.data.degradations import add_jpg_compression

from drward.data.degrade import (
    Degradation,
    DegradationSettings,
    apply_degradation,
    degrade_tensor,
    gaussian_kernel,
    jpeg_compress,
    seeded_global_rng,
)
from drward.data.demo_faces import make_demo_faces
from drward.data.face_degradation_dataset import DEFAULT_FALLBACK_CAPTION, FaceDegradationDataset
from drward.data.image_io import ImageListError, ImageReadError, read_image
from drward.utils.options import OptionError

SIZE = 64
NO_DEGRADATION = dict(blur_kernel_size=3, blur_sigma=[0.1, 0.1], downsample_range=[1, 1], noise_range=None,
                      jpeg_range=None)


@pytest.fixture(scope='module')
def face_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('faces'))
    make_demo_faces(folder, size=SIZE, count=8)
    return folder


def _opt(root, **extra):
    opt = {'name': 'faces', 'type': 'FaceDegradationDataset', 'phase': 'val', 'dataroot_gt': root, 'gt_size': SIZE}
    opt.update(extra)
    return opt


def _write_png(path, size=SIZE, value=128):
    cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))


def _psnr(a, b):
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2).clamp_min(1e-12)))


def test_lq_has_gt_shape_and_is_degraded_across_samples(face_folder):
    dataset = FaceDegradationDataset(_opt(face_folder, seed=3))
    psnrs = []
    for index in range(len(dataset)):
        item = dataset[index]
        assert item['lq'].shape == item['gt'].shape == (3, SIZE, SIZE)
        assert item['lq'].dtype == torch.float32 and 0 <= item['lq'].min() and item['lq'].max() <= 1
        psnrs.append(_psnr(item['lq'], item['gt']))
    assert np.mean(psnrs) < 30.0


def test_without_degradation_lq_equals_gt(face_folder):
    """The PSNR bound above can fail: with every degradation switched off, LQ is GT."""
    item = FaceDegradationDataset(_opt(face_folder, seed=3, **NO_DEGRADATION))[0]
    assert _psnr(item['lq'], item['gt']) > 45.0


def test_seeded_items_are_identical_across_two_datasets(face_folder):
    first, second = (FaceDegradationDataset(_opt(face_folder, seed=11, use_hflip=True)) for _ in range(2))
    for index in (0, 5):
        a, b = first[index], second[index]
        assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])
    assert not torch.equal(first[0]['lq'], FaceDegradationDataset(_opt(face_folder, seed=12))[0]['lq'])


def test_seeded_items_leave_the_global_rng_untouched(face_folder):
    dataset = FaceDegradationDataset(_opt(face_folder, seed=1))
    np.random.seed(7)
    random.seed(7)
    dataset[0]
    assert np.random.uniform() == np.random.RandomState(7).uniform()
    assert random.random() == random.Random(7).random()


def test_unseeded_items_vary_between_reads(face_folder):
    dataset = FaceDegradationDataset(_opt(face_folder, phase='train'))
    assert not torch.equal(dataset[0]['lq'], dataset[0]['lq'])


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_caption_from_txt_then_caption_file_then_fallback(tmp_path):
    for name in ('a', 'b', 'c', 'd'):
        _write_png(tmp_path / f'{name}.png')
    (tmp_path / 'a.txt').write_text('caption from the text file\n')
    caption_file = tmp_path / 'captions.json'
    caption_file.write_text(json.dumps({'a.png': 'ignored: the txt file wins', 'b': 'caption from the json file'}))
    records, logger = _Records(), logging.getLogger('basicsr')  # BasicSR's root logger does not propagate
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)  # as BasicSR's training sets it
    try:
        dataset = FaceDegradationDataset(_opt(str(tmp_path), caption_file=str(caption_file), fallback_caption='fb'))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    assert [dataset[i]['caption'] for i in range(4)] == [
        'caption from the text file', 'caption from the json file', 'fb', 'fb']
    assert dataset.fallback_count == 2
    assert sum('2 of 4 images have no caption' in m for m in records.messages) == 1


def test_tsv_caption_file_and_default_fallback(tmp_path):
    for name in ('a', 'b'):
        _write_png(tmp_path / f'{name}.jpg')
    caption_file = tmp_path / 'captions.tsv'
    caption_file.write_text('a.jpg\ta caption from the tsv file\n')
    dataset = FaceDegradationDataset(_opt(str(tmp_path), caption_file=str(caption_file)))
    assert dataset[0]['caption'] == 'a caption from the tsv file'
    assert dataset[1]['caption'] == DEFAULT_FALLBACK_CAPTION
    assert dataset.fallback_count == 1


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty'])
def test_corrupt_image_raises_an_error_naming_it(tmp_path, damage):
    _write_png(tmp_path / 'good.png')
    bad = tmp_path / 'bad.png'
    payload = cv2.imencode('.png', np.random.randint(0, 255, (SIZE, SIZE, 3), np.uint8))[1].tobytes()
    bad.write_bytes({'truncated': payload[:len(payload) // 2], 'garbage': b'not an image' * 9, 'empty': b''}[damage])
    dataset = FaceDegradationDataset(_opt(str(tmp_path)))
    with pytest.raises(ImageReadError, match=str(bad)):
        dataset[0]  # sorted: bad.png comes first


def test_empty_or_missing_folder_raises_an_error_naming_it(tmp_path):
    with pytest.raises(ImageListError, match=str(tmp_path)):
        FaceDegradationDataset(_opt(str(tmp_path)))
    with pytest.raises(ImageListError, match='nowhere'):
        FaceDegradationDataset(_opt(str(tmp_path / 'nowhere')))


def test_unknown_option_key_lists_the_accepted_keys(face_folder):
    with pytest.raises(OptionError) as error:
        FaceDegradationDataset(_opt(face_folder, blur_sigmaa=[1, 2]))
    message = str(error.value)
    assert 'blur_sigmaa' in message and 'dataroot_gt' in message and 'jpeg_range' in message


def test_demo_faces_option_writes_the_folder_when_missing(tmp_path):
    root = str(tmp_path / 'demo')
    dataset = FaceDegradationDataset(_opt(root, demo_faces=True))
    assert len(dataset) == 16 and dataset.fallback_count == 0
    assert dataset[0]['caption'].startswith('a photo of a smiling face')


def test_meta_info_file_lists_images_relative_to_dataroot(face_folder, tmp_path):
    meta = tmp_path / 'meta.txt'
    meta.write_text(f'demo_face_003.png ({SIZE},{SIZE},3)\ndemo_face_001.png ({SIZE},{SIZE},3)\n')
    dataset = FaceDegradationDataset(_opt(face_folder, meta_info_file=str(meta)))
    assert [os.path.basename(p) for p in dataset.gt_paths] == ['demo_face_003.png', 'demo_face_001.png']


def test_non_square_hq_is_cropped_and_resized_to_gt_size(tmp_path):
    cv2.imwrite(str(tmp_path / 'wide.png'), np.random.randint(0, 255, (90, 150), np.uint8))  # grey, not square
    item = FaceDegradationDataset(_opt(str(tmp_path), gt_size=48))[0]
    assert item['gt'].shape == item['lq'].shape == (3, 48, 48)
    assert torch.equal(item['gt'][0], item['gt'][2])  # grey replicated to three channels


@pytest.mark.parametrize('phase,batch', [('train', 2), ('val', 1)])
def test_works_under_basicsr_build_dataset_and_dataloader(face_folder, phase, batch):
    opt = _opt(face_folder, phase=phase, use_hflip=True, num_worker_per_gpu=0, batch_size_per_gpu=2,
               dataset_enlarge_ratio=1, prefetch_mode=None, io_backend={'type': 'disk'})
    loader = build_dataloader(build_dataset(opt), opt, num_gpu=0, dist=False, sampler=None, seed=0)
    item = next(iter(loader))
    assert item['lq'].shape == item['gt'].shape == (batch, 3, SIZE, SIZE)
    assert len(item['caption']) == batch and isinstance(item['caption'][0], str)
    assert len(item['lq_path']) == batch


def test_jpeg_compress_equals_basicsr_add_jpg_compression():
    img = np.random.RandomState(0).rand(32, 32, 3).astype(np.float32)
    assert np.array_equal(jpeg_compress(img, 40), add_jpg_compression(img, 40))


def test_explicit_degradation_blurs_and_keeps_size():
    img = np.random.RandomState(0).rand(40, 40, 3).astype(np.float32)
    lq = apply_degradation(img, Degradation(kernel=gaussian_kernel(21, 3.0), scale=4.0))
    assert lq.shape == img.shape
    assert np.abs(np.diff(lq, axis=1)).mean() < 0.25 * np.abs(np.diff(img, axis=1)).mean()


def test_degrade_tensor_is_seeded_and_keeps_shape():
    images = torch.rand(2, 3, 32, 32)
    first, second = degrade_tensor(images, seed=4), degrade_tensor(images, seed=4)
    assert first.shape == images.shape and torch.equal(first, second)
    assert not torch.equal(first[0], degrade_tensor(images[0], seed=5))


def test_seeded_global_rng_restores_state():
    np.random.seed(3)
    with seeded_global_rng(99):
        np.random.uniform()
    assert np.random.uniform() == np.random.RandomState(3).uniform()


def test_invalid_degradation_settings_are_rejected():
    with pytest.raises(ValueError, match='odd'):
        DegradationSettings(blur_kernel_size=40)
    with pytest.raises(ValueError, match='jpeg_range'):
        DegradationSettings(jpeg_range=(90, 30))


def test_read_image_names_a_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match='missing.png'):
        read_image(str(tmp_path / 'missing.png'))


def test_mean_and_std_normalise_both_images_like_basicsr(face_folder):
    plain = FaceDegradationDataset(_opt(face_folder, seed=3))[1]
    mean, std = [0.5, 0.4, 0.3], [0.5, 0.25, 0.2]
    normalised = FaceDegradationDataset(_opt(face_folder, seed=3, mean=mean, std=std))[1]
    for key in ('lq', 'gt'):  # the same seeded item: the same pixels, then (x - mean) / std per RGB channel
        expected = (plain[key] - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        torch.testing.assert_close(normalised[key], expected)
    with pytest.raises(ValueError, match='mean and std go together'):
        FaceDegradationDataset(_opt(face_folder, mean=mean))
