"""Batched restoration: each face draws its own noise, so batch 1 is today's output bit for bit and a batch of B
stays within ±1 DN of it (only the network's batch-size kernels differ); FaceTestModel's val.batch_size; the
tools/restore.py --batch-size path on a group photo and a folder."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from option_files import ROOT
from skimage import data
from test_face_test_model import make_opt, paired, run, write_pairs

from drward.archs.restorer import restore_seeded
from drward.diffusion import row_noise
from drward.inference.model import build_face_restorer

FACES = 4


def to_dn(images: torch.Tensor) -> np.ndarray:
    """[0, 1] → 8-bit values, as every writer rounds them."""
    return (images.clamp(0, 1) * 255).round().to(torch.int16).numpy()


def test_one_generator_per_row_draws_what_each_generator_draws_alone():
    batch = row_noise.randn((3, 4, 5, 5), row_noise.seeded([7, 8, 7]))
    alone = [torch.randn((1, 4, 5, 5), generator=torch.Generator().manual_seed(s)) for s in (7, 8, 7)]
    assert torch.equal(batch, torch.cat(alone))  # the same draws, same kernel
    assert torch.equal(row_noise.randn((1, 2, 3), row_noise.seeded([5])),
                       torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match='2 generators for a batch of 3'):
        row_noise.randn((3, 2), row_noise.seeded([1, 2]))


@pytest.mark.parametrize('restorer', ['diffbir', 'osediff'])
def test_a_batch_of_faces_is_within_one_dn_of_each_face_alone_in_any_order(one_thread, restorer):
    net = build_face_restorer(tiny=True, restorer=restorer, steps=3, device='cpu').net
    lq = torch.rand(FACES, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seeds = [11, 12, 13, 14]
    alone = np.concatenate([to_dn(restore_seeded(net, lq[i:i + 1], None, seeds[i])) for i in range(FACES)])
    batched = to_dn(restore_seeded(net, lq, None, seeds))
    reversed_ = to_dn(restore_seeded(net, lq.flip(0), None, seeds[::-1]))[::-1]
    assert np.abs(batched - alone).max() <= 1 and np.abs(reversed_ - alone).max() <= 1
    assert (batched == alone).mean() > 0.99  # almost every pixel equal, not just close
    other_seed = to_dn(restore_seeded(net, lq[:1], None, 99))
    assert np.abs(other_seed - alone[:1]).max() > 1  # the noise matters: the seed, not the batch, decides it


def test_face_restorer_batch_of_one_is_the_single_face_call_bit_for_bit(one_thread):
    model = build_face_restorer(tiny=True, steps=2, device='cpu')
    faces = (np.random.default_rng(0).random((3, 64, 64, 3)) * 255).astype(np.uint8)
    lq = torch.from_numpy(faces[:1].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    today = (restore_seeded(model.net, lq, None, model.seed)[0].permute(1, 2, 0).numpy() * 255.0).round()
    assert np.array_equal(model.restore_face(faces[0]), today.astype(np.uint8))
    batched = model.restore_faces(faces).astype(int)
    alone = np.stack([model.restore_face(face) for face in faces]).astype(int)
    assert np.abs(batched - alone).max() <= 1


def test_face_test_model_batch_1_is_the_per_face_seeded_call_and_batch_3_within_one_dn(tmp_path, one_thread):
    lq_dir, gt_dir = write_pairs(str(tmp_path / 'data'), count=FACES, size=64)
    network = dict(type='DiffBIRRestorer', tiny=True, num_steps=3)
    outputs = {}
    for batch in (1, 3):
        opt = make_opt(tmp_path / f'b{batch}', paired(lq_dir, gt_dir), network=network,
                       val={'batch_size': batch, 'seed': 5, 'save_img': False})
        model = run(opt)
        assert model.restore_calls == (FACES if batch == 1 else 2)  # 3 + 1
        folder = tmp_path / f'b{batch}' / 'restored' / 'tiny' / 'pairs'
        outputs[batch] = {name: cv2.imread(str(folder / name)) for name in sorted(os.listdir(folder))
                          if name.endswith('.png')}
    net = model.get_bare_model(model.net_g)
    for index, name in enumerate(sorted(outputs[1])):
        lq = torch.from_numpy(cv2.imread(os.path.join(lq_dir, name))[..., ::-1].astype(np.float32) / 255.0)
        today = to_dn(restore_seeded(net, lq.permute(2, 0, 1)[None], None, 5 + index))[0].transpose(1, 2, 0)
        assert np.array_equal(outputs[1][name][..., ::-1], today.astype(np.uint8)), name
        assert np.abs(outputs[3][name].astype(int) - outputs[1][name]).max() <= 1, name


def group_photo() -> np.ndarray:
    """Two astronauts side by side (the second mirrored): a photo with two faces."""
    photo = data.astronaut()
    return np.concatenate([photo, photo[:, ::-1]], axis=1)


def test_restore_tool_batch_size_4_on_a_group_photo_and_a_folder(tmp_path, one_thread):
    folder = tmp_path / 'in'
    folder.mkdir()
    cv2.imwrite(str(folder / 'group.png'), group_photo()[..., ::-1])
    cv2.imwrite(str(folder / 'single.png'), data.astronaut()[..., ::-1])
    cv2.imwrite(str(folder / 'wall.png'), np.full((60, 80, 3), 90, np.uint8))
    out = tmp_path / 'out'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'restore.py'), '-i', str(folder), '-o',
                             str(out), '--tiny', '--steps', '2', '--face-size', '128', '--batch-size', '4',
                             '--no-progress', '--device', 'cpu'], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out / 'restored_faces')) == ['group_00.png', 'group_01.png', 'single_00.png']
    assert 'Images  : 3 -> 2 restored (3 faces), 1 without a face' in result.stdout
    for name in ('group', 'single', 'wall'):
        assert cv2.imread(str(out / 'restored_imgs' / f'{name}.png')).shape[:2] == \
            cv2.imread(str(folder / f'{name}.png')).shape[:2]
    model = build_face_restorer(tiny=True, steps=2, device='cpu')  # the tool's restorer, faces one at a time
    for name in sorted(os.listdir(out / 'restored_faces')):
        crop = cv2.imread(str(out / 'cropped_faces' / name))[..., ::-1]
        alone = model.restore_face(np.ascontiguousarray(crop)).astype(int)
        assert np.abs(cv2.imread(str(out / 'restored_faces' / name))[..., ::-1] - alone).max() <= 1, name
