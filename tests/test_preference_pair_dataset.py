"""PreferencePairDataset: tensors, labels, captions, selection, swap augmentation and errors."""
import json
import os

import numpy as np
import pytest
import torch
from annotate_helpers import solid_rgb, write_rgb_png
from basicsr.data import build_dataset
from torch.utils.data import DataLoader

from drward.data.image_io import ImageReadError
from drward.data.pairs_file import PairsFormatError, PreferencePair, write_pairs
from drward.data.preference_pair_dataset import PreferencePairDataset
from drward.utils.options import OptionError

RED, BLUE = (220, 10, 10), (10, 10, 220)


@pytest.fixture
def pair_folder(tmp_path):
    """red.png (40×30) and blue.png (32×32) under images/, captions, and a pairs file of five rows."""
    write_rgb_png(str(tmp_path / 'images' / 'red.png'), np.broadcast_to(np.uint8(RED), (30, 40, 3)).copy())
    write_rgb_png(str(tmp_path / 'images' / 'blue.png'), solid_rgb(32, BLUE))
    (tmp_path / 'images' / 'red.txt').write_text('a red face\n')
    (tmp_path / 'caps.txt').write_text('a face from a caption file\n')
    write_pairs(tmp_path / 'pairs.jsonl', [
        PreferencePair('images/red.png', 'images/blue.png', caption='given caption', label=1.0, source='human'),
        PreferencePair('images/blue.png', 'images/red.png', caption_key='caps.txt', label=0.25, source='svm',
                       confidence=0.75),
        PreferencePair('images/red.png', 'images/blue.png', label=0.0, source='svm', confidence=0.55),
        PreferencePair('images/blue.png', 'images/red.png', label=1.0, source='human'),
        PreferencePair('images/red.png', 'images/blue.png'),  # unlabelled: skipped
    ])
    return tmp_path


def _dataset(folder, **opt):
    return PreferencePairDataset({'pairs_file': str(folder / 'pairs.jsonl'), 'image_size': 16, **opt})


def test_items_hold_rgb_tensors_of_the_requested_size_and_the_label(pair_folder):
    dataset = _dataset(pair_folder)
    assert len(dataset) == 4
    item = dataset[0]
    assert item['img_a'].shape == item['img_b'].shape == (3, 16, 16)
    assert item['img_a'].dtype == torch.float32
    assert 0.0 <= float(item['img_a'].min()) and float(item['img_a'].max()) <= 1.0
    np.testing.assert_allclose(item['img_a'][:, 8, 8].numpy(), np.array(RED) / 255.0, atol=1e-6)  # RGB order
    np.testing.assert_allclose(item['img_b'][:, 8, 8].numpy(), np.array(BLUE) / 255.0, atol=1e-6)
    assert item['label'].dtype == torch.float32 and float(item['label']) == 1.0
    assert item['a_path'] == os.path.join(str(pair_folder), 'images', 'red.png')
    assert float(dataset[1]['label']) == 0.25 and dataset[1]['confidence'] == 0.75
    assert dataset[0]['source'] == 'human' and dataset[0]['confidence'] == 1.0


def test_caption_order_text_then_key_then_beside_image_a_then_fallback(pair_folder):
    dataset = _dataset(pair_folder, fallback_caption='FALLBACK')
    assert dataset.captions == ['given caption', 'a face from a caption file', 'a red face', 'FALLBACK']


def test_caption_key_looks_up_the_caption_file_when_one_is_given(pair_folder):
    (pair_folder / 'captions.json').write_text(json.dumps({'caps.txt': 'from the mapping'}))
    dataset = _dataset(pair_folder, caption_file=str(pair_folder / 'captions.json'))
    assert dataset.captions[1] == 'from the mapping'


def test_sources_and_min_confidence_select_rows(pair_folder):
    assert len(_dataset(pair_folder, sources=['human'])) == 2
    assert [float(l) for l in (item['label'] for item in _dataset(pair_folder, min_confidence=0.7))] == [1.0, 0.25, 1.0]
    with pytest.raises(OptionError, match='sources'):
        _dataset(pair_folder, sources=['crowd'])
    with pytest.raises(ValueError, match='no labelled pairs'):
        _dataset(pair_folder, sources=['svm'], min_confidence=0.9)


def test_swap_exchanges_images_paths_and_complements_the_label(pair_folder):
    plain, swapped = _dataset(pair_folder)[1], None
    dataset = _dataset(pair_folder, use_swap=True)
    np.random.seed(0)
    seen = {float(dataset[1]['label']) for _ in range(20)}
    assert seen == {0.25, 0.75}
    for _ in range(20):
        item = dataset[1]
        if float(item['label']) == 0.75:
            swapped = item
    assert torch.equal(swapped['img_a'], plain['img_b']) and swapped['a_path'] == plain['b_path']


def test_registered_and_batches_through_basicsr(pair_folder):
    dataset = build_dataset({'type': 'PreferencePairDataset', 'name': 'pairs', 'phase': 'train',
                             'pairs_file': str(pair_folder / 'pairs.jsonl'), 'image_size': 8,
                             'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0})
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch['img_a'].shape == (2, 3, 8, 8) and batch['label'].shape == (2,)
    assert batch['caption'] == ['given caption', 'a face from a caption file']


def test_unknown_option_lists_accepted_keys(pair_folder):
    with pytest.raises(OptionError, match=r"PreferencePairDataset: img_size: unknown key \(did you mean "
                                          r"'image_size'\?\).*pairs_file"):
        _dataset(pair_folder, img_size=32)


def test_missing_pairs_file_and_bad_line_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.jsonl'):
        PreferencePairDataset({'pairs_file': str(tmp_path / 'nowhere.jsonl')})
    (tmp_path / 'bad.jsonl').write_text('{"image_a": "a.png", "image_b": "b.png", "label": 2, "source": "human"}\n')
    with pytest.raises(PairsFormatError, match='bad.jsonl, line 1'):
        PreferencePairDataset({'pairs_file': str(tmp_path / 'bad.jsonl')})


def test_missing_or_corrupt_image_is_named(pair_folder):
    write_pairs(pair_folder / 'pairs.jsonl', [PreferencePair('images/red.png', 'images/gone.png', label=1.0,
                                                             source='human')])
    with pytest.raises(ImageReadError, match='gone.png'):
        _dataset(pair_folder)[0]
    (pair_folder / 'images' / 'gone.png').write_bytes(b'not a png')
    with pytest.raises(ImageReadError, match='gone.png'):
        _dataset(pair_folder)[0]


def test_image_root_option_moves_relative_paths(pair_folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp('elsewhere')
    write_pairs(elsewhere / 'pairs.jsonl', [PreferencePair('images/red.png', 'images/blue.png', label=1.0,
                                                           source='human')])
    dataset = PreferencePairDataset({'pairs_file': str(elsewhere / 'pairs.jsonl'), 'image_root': str(pair_folder)})
    assert dataset[0]['img_a'].shape == (3, 224, 224)
