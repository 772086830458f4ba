"""BasicSR lmdb data: tools/make_lmdb.py's layout and reruns, the datasets reading it (disk and lmdb alike), and the
faster blur. Demo faces at 32², a few of them."""
import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from drward.data.caption_store import CaptionFileStore
from drward.data.degrade import blur, gaussian_kernel
from drward.data.demo_faces import make_demo_faces
from drward.data.face_degradation_dataset import FaceDegradationDataset
from drward.data.image_io import read_meta_file
from drward.data.image_source import read_lmdb_keys
from drward.data.lmdb_pack import INCOMPLETE_SUFFIX, LmdbPackError, pack_folder
from drward.data.pairs_file import PreferencePair, write_pairs
from drward.data.preference_pair_dataset import PreferencePairDataset
from drward.utils.options import OptionError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RANGES = dict(blur_sigma=[0.1, 3], downsample_range=[1, 4], noise_range=[0, 10], jpeg_range=[60, 100])


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def faces(tmp_path):
    """Six 32² demo faces with captions, plus a corrupt PNG."""
    folder = tmp_path / 'faces'
    make_demo_faces(str(folder), 32, 6)
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    return folder


def face_dataset(root, lmdb, **opt):
    backend = {'type': 'lmdb'} if lmdb else {'type': 'disk'}
    return FaceDegradationDataset(dict(dataroot_gt=str(root), io_backend=backend, gt_size=32, seed=0, **RANGES, **opt))


def test_make_lmdb_writes_basicsrs_layout_with_captions_and_skips_the_corrupt_file(faces, tmp_path, capsys):
    out = tmp_path / 'faces.lmdb'
    assert load_tool('make_lmdb').main(['--images', str(faces), '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'built' in printed and 'broken.png (cannot decode' in printed
    assert sorted(os.listdir(out)) == ['captions.tsv', 'data.mdb', 'lock.mdb', 'meta_info.txt']
    lines = (out / 'meta_info.txt').read_text().splitlines()
    assert lines[0] == 'demo_face_000.png (32,32,3) 1' and len(lines) == 6
    with open(out / 'meta_info.txt') as fin:  # how GFPGAN's FFHQDegradationDataset reads the keys
        assert [line.split('.')[0] for line in fin] == read_lmdb_keys(str(out))
    captions = CaptionFileStore(str(out / 'captions.tsv')).captions
    assert captions['demo_face_001'] == (faces / 'demo_face_001.txt').read_text().strip()
    assert len(captions) == 6


def test_lmdb_and_folder_give_the_same_items(faces, tmp_path):
    # the same decoded pixels (PNG is lossless) and the same seeded draws run the same kernels: exact equality
    os.remove(faces / 'broken.png')
    pack_folder(str(faces), str(tmp_path / 'faces.lmdb'))
    on_disk, in_lmdb = face_dataset(faces, False), face_dataset(tmp_path / 'faces.lmdb', True)
    assert len(on_disk) == len(in_lmdb) == 6 and in_lmdb.captions == on_disk.captions
    for i in (0, 5):
        a, b = on_disk[i], in_lmdb[i]
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
        assert b['gt_path'] == f'demo_face_00{i}' and a['caption'] == b['caption']


def test_a_key_missing_from_the_lmdb_is_skipped_with_a_warning_naming_it(faces, tmp_path, basicsr_warnings):
    pack_folder(str(faces), str(tmp_path / 'faces.lmdb'))
    meta = tmp_path / 'meta.txt'
    meta.write_text('demo_face_000.png (32,32,3) 1\nnot_there.png (32,32,3) 1\ndemo_face_002.png (32,32,3) 1\n')
    dataset = face_dataset(tmp_path / 'faces.lmdb', True, meta_info_file=str(meta), max_bad_fraction=0.5)
    assert dataset[1]['gt_path'] == 'demo_face_002'  # the next readable item takes its place
    assert 'skipping not_there: cannot read key not_there of lmdb' in basicsr_warnings.text


def test_lmdb_dataset_reads_in_forked_workers_after_the_main_process_read_it(faces, tmp_path):
    pack_folder(str(faces), str(tmp_path / 'faces.lmdb'))
    dataset = face_dataset(tmp_path / 'faces.lmdb', True)
    first = dataset[0]['gt']  # the main process opens the environment first, as validation does
    val = face_dataset(tmp_path / 'faces.lmdb', True)  # a second dataset on the same lmdb in the same process
    assert torch.equal(val[0]['gt'], first)
    batches = list(DataLoader(dataset, batch_size=3, num_workers=2))
    assert [b['gt'].shape[0] for b in batches] == [3, 3] and torch.equal(batches[0]['gt'][0], first)


def test_rerun_keeps_a_complete_lmdb_and_adds_new_captions_only(faces, tmp_path):
    out = str(tmp_path / 'faces.lmdb')
    pack_folder(str(faces), out)
    stamp = os.stat(os.path.join(out, 'data.mdb')).st_mtime_ns
    (faces / 'demo_face_000.txt').write_text('edited later\n')  # an existing caption is not replaced
    (faces / 'demo_face_003.txt').unlink()
    store = CaptionFileStore(os.path.join(out, 'captions.tsv'))
    report = pack_folder(str(faces), out)
    assert report.action == 'kept' and report.images == 6 and report.captions_added == 0
    assert report.not_packed == 1  # broken.png
    assert os.stat(os.path.join(out, 'data.mdb')).st_mtime_ns == stamp
    assert CaptionFileStore(os.path.join(out, 'captions.tsv')).captions == store.captions


def test_an_incomplete_lmdb_is_refused_and_overwrite_rebuilds_it(faces, tmp_path):
    out = str(tmp_path / 'faces.lmdb')
    pack_folder(str(faces), out)
    meta = os.path.join(out, 'meta_info.txt')
    with open(meta) as handle:
        lines = handle.readlines()
    with open(meta, 'w') as handle:  # as an interrupted BasicSR script leaves it: fewer lines than entries
        handle.writelines(lines[:-1])
    with pytest.raises(LmdbPackError, match='not a complete lmdb.*5 images, data.mdb holds 6.*--overwrite'):
        pack_folder(str(faces), out)
    assert pack_folder(str(faces), out, overwrite=True).action == 'rebuilt'
    assert len(read_lmdb_keys(out)) == 6


def test_a_pack_interrupted_midway_is_redone(faces, tmp_path):
    leftover = tmp_path / ('faces' + INCOMPLETE_SUFFIX)
    leftover.mkdir()
    (leftover / 'data.mdb').write_bytes(b'half')
    report = pack_folder(str(faces), str(tmp_path / 'faces.lmdb'))
    assert report.action == 'built' and not leftover.exists()


def test_preference_pairs_read_from_a_recursive_lmdb_as_from_the_folder(tmp_path):
    for face in ('face_a', 'face_b'):
        make_demo_faces(str(tmp_path / 'frm' / face), 24, 2)
    write_pairs(tmp_path / 'frm' / 'pairs.jsonl', [
        PreferencePair('face_a/demo_face_000.png', 'face_a/demo_face_001.png', label=1.0, source='human'),
        PreferencePair('face_b/demo_face_001.png', 'face_b/demo_face_000.png', label=0.0, source='svm')])
    pack_folder(str(tmp_path / 'frm'), str(tmp_path / 'frm.lmdb'), recursive=True)
    assert read_lmdb_keys(str(tmp_path / 'frm.lmdb'))[0] == 'face_a/demo_face_000'
    common = dict(pairs_file=str(tmp_path / 'frm' / 'pairs.jsonl'), image_size=24)
    on_disk = PreferencePairDataset(common)
    in_lmdb = PreferencePairDataset(dict(common, io_backend={'type': 'lmdb'}, image_root=str(tmp_path / 'frm.lmdb')))
    for i in range(2):  # lossless PNG both ways: exact
        assert torch.equal(on_disk[i]['img_a'], in_lmdb[i]['img_a'])
        assert torch.equal(on_disk[i]['img_b'], in_lmdb[i]['img_b'])
    assert in_lmdb.captions == on_disk.captions  # the .txt beside image A, from captions.tsv by A's key
    assert in_lmdb[1]['a_path'] == 'face_b/demo_face_001'


def test_backend_and_demo_faces_mistakes_fail_at_construction(tmp_path):
    with pytest.raises(OptionError,
                       match=r"io_backend.type: got 'memcached' \(str\); accepted: one of \['disk', 'lmdb'\]"):
        FaceDegradationDataset(dict(dataroot_gt=str(tmp_path), io_backend={'type': 'memcached'}))
    with pytest.raises(OptionError, match='demo_faces writes image files, not an lmdb'):
        FaceDegradationDataset(dict(dataroot_gt=str(tmp_path / 'x.lmdb'), io_backend={'type': 'lmdb'},
                                    demo_faces=True))
    with pytest.raises(FileNotFoundError, match='is not an lmdb.*tools/make_lmdb.py'):
        FaceDegradationDataset(dict(dataroot_gt=str(tmp_path), io_backend={'type': 'lmdb'}))


def test_meta_lines_with_a_compress_level_name_the_image(tmp_path):
    meta = tmp_path / 'meta_info.txt'
    meta.write_text('00000.png (512,512,3) 1\nsub/00001.png (512,512,3)\n')
    assert read_meta_file(str(meta), 'root') == [os.path.join('root', name) for name in ('00000.png', 'sub/00001.png')]


@pytest.mark.parametrize('sigmas', [(0.1, None), (1.0, None), (12.0, None), (0.3, 0.5), (2.0, 7.0), (12.0, 3.0)])
def test_blur_matches_filter2d_to_float32_rounding(sigmas):
    # two computation paths (1-D passes or a cropped kernel vs OpenCV's 2-D / DFT filter): float32 rounding apart,
    # 1e-6 is a few ulps of a pixel value in [0, 1]
    img = np.random.default_rng(0).random((96, 80, 3), dtype=np.float32)
    kernel = gaussian_kernel(41, sigmas[0], sigmas[1], theta=0.6)
    np.testing.assert_allclose(blur(img, kernel), cv2.filter2D(img, -1, kernel.astype(np.float32)), atol=1e-6)
