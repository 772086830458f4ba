"""The authors' code mode (issue 18): last-micro-batch accumulation, per-update η, the FRM's bilinear resize, strict
captions, truncated image saving, and options/refl_diffbir_authors_tiny.yml through tools/train.py."""
import os
import os.path as osp
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.models import build_model
from basicsr.utils import tensor2img
from basicsr.utils.registry import ARCH_REGISTRY
from option_files import ROOT, run_tools_train, short_training_option
from test_face_test_model import make_opt as make_test_opt
from test_face_test_model import paired, write_pairs
from test_face_test_model import run as run_test_model
from test_refl_model import batch, make_opt
from torch import nn
from torchvision import transforms

from drward.archs.diffbir_arch import DiffBIRRestorer
from drward.archs.frm_arch import FaceRewardModel, resize_for_clip
from drward.archs.osediff_arch import OSEDiffRestorer
from drward.data.face_degradation_dataset import FaceDegradationDataset, MissingCaptionError
from drward.utils.options import OptionError

pytestmark = pytest.mark.usefixtures('one_thread')


# ------------------------------------------------------------------------------------- 1. gradient accumulation
def _step_without_applying(model, data):
    """One ``optimize_parameters`` with the generator's step replaced by a copy of the gradients it would apply, and
    the pairs the FRM update scores recorded; returns (gradients, [(restored, gt, captions)])."""
    grads, pairs = {}, []
    model.optimizer_g.step = lambda: grads.update(
        {name: p.grad.clone() for name, p in model.net_g.control.named_parameters()})
    scorer = model.frm.preference_logits
    model.frm.preference_logits = lambda a, b, captions: pairs.append((a, b, list(captions))) or scorer(a, b, captions)
    model.feed_data(data)
    model.optimize_parameters(1)
    return grads, pairs


def test_last_microbatch_applies_the_last_micro_batch_gradient_over_grad_accum_and_one_frm_pair(tmp_path):
    data = batch(n=4)
    frm_every_step = {'every': 1, 'optim': {'lr': 1e-4, 'weight_decay': 0.35}}
    authors = build_model(make_opt(tmp_path / 'a', grad_accum=4, grad_accum_mode='last_microbatch',
                                   frm_update=frm_every_step))
    # reference: a plain step on the 4th face alone; mean: the paper's accumulation over all four. Same weights (the
    # tiny FRM too) and the same random stream (every model seeds its generator from manual_seed).
    reference = build_model(make_opt(tmp_path / 'r', grad_accum=1, frm_update=frm_every_step))
    mean = build_model(make_opt(tmp_path / 'm', grad_accum=4, frm_update=frm_every_step))
    for other in (reference, mean):
        other.net_g.load_state_dict(authors.net_g.state_dict())
        other.frm.load_state_dict(authors.frm.state_dict())
    grads, pairs = _step_without_applying(authors, data)
    expected, _ = _step_without_applying(reference, {key: value[3:] for key, value in data.items()})
    for name, grad in grads.items():
        # the same kernels on the same inputs; only the loss's 1/4 (exact in floating point) differs
        torch.testing.assert_close(grad, expected[name] / 4, rtol=1e-6, atol=0)
    assert len(pairs) == 1 and pairs[0][0].shape[0] == 1
    assert torch.equal(pairs[0][1], data['gt'][3:]) and pairs[0][2] == ['face 3']
    mean_grads, mean_pairs = _step_without_applying(mean, data)
    assert not torch.allclose(mean_grads['weight'], grads['weight'], rtol=1e-2)
    assert mean_pairs[0][0].shape[0] == 4 and mean_pairs[0][2] == [f'face {i}' for i in range(4)]


def test_unknown_grad_accum_mode_lists_the_accepted_ones(tmp_path):
    with pytest.raises(OptionError, match="'mean', 'last_microbatch'"):
        build_model(make_opt(tmp_path, grad_accum_mode='sum'))


# ------------------------------------------------------------------------------------- 2. DDIM η per update
@pytest.mark.parametrize('per_update', [True, False])
def test_diffbir_draws_one_eta_per_ddim_update_by_default(per_update):
    steps, stop = 8, 7  # a training restoration stopping at the last index makes K − 1 DDIM updates, then ẑ_0
    options = {} if per_update else {'eta_per_update': False}
    restorer = DiffBIRRestorer(tiny=True, num_steps=steps, seed=0, **options).train()
    draws, draw = [], restorer.sampler.draw_eta
    restorer.sampler.draw_eta = lambda generator=None: draws.append(draw(generator)) or draws[-1]
    with torch.no_grad():
        restorer.restore(torch.rand(1, 3, 64, 64), grad_steps=1, generator=torch.Generator().manual_seed(0),
                         stop_index=stop)
    assert len(draws) == (stop if per_update else 1)
    assert len(set(draws)) == len(draws) and all(0.0 <= eta < 1.0 for eta in draws)


def test_osediff_accepts_eta_per_update():
    """Accepted so option files can switch restorers; one step at t = 999 makes no DDIM update, so no η is drawn."""
    restorer = OSEDiffRestorer(tiny=True, seed=0, eta_per_update=False)
    assert not hasattr(restorer, 'sampler')


# ------------------------------------------------------------------------------------- 3. the FRM's input resize
@pytest.mark.parametrize('shape', [(512, 512), (300, 410), (410, 300)])
def test_bilinear_resize_matches_torchvision_resize_without_antialiasing(shape):
    images = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0))
    expected = transforms.Resize(224, antialias=False)(images)
    ours = resize_for_clip(images, 224, 'bilinear')
    assert ours.shape == expected.shape
    # the same interpolation kernel on the same float32 input: equal up to float rounding
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert (resize_for_clip(images, 224, 'bicubic_antialias')[..., :224, :224]
            - expected[..., :224, :224]).abs().max() > 1e-2


def test_frm_resize_option_reaches_its_preprocessing():
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    frm = FaceRewardModel('tiny', resize='bilinear')
    normalise = transforms.Normalize(frm.pixel_mean.flatten().tolist(), frm.pixel_std.flatten().tolist())
    expected = normalise(transforms.Resize(frm.image_size, antialias=False)(images))
    torch.testing.assert_close(frm.preprocess(images), expected, rtol=0, atol=1e-5)  # float rounding of (x − μ)/σ
    with pytest.raises(OptionError, match='resize'):
        FaceRewardModel('tiny', resise='bilinear')
    with pytest.raises(ValueError, match='bicubic_antialias'):
        FaceRewardModel('tiny', resize='nearest')


# ------------------------------------------------------------------------------------- 6. missing captions
def test_strict_captions_raise_naming_the_image_without_one(tmp_path):
    for name in ('a', 'b', 'c'):
        cv2.imwrite(str(tmp_path / f'{name}.png'), np.full((32, 32, 3), 128, np.uint8))
    (tmp_path / 'a.txt').write_text('a face\n')
    (tmp_path / 'c.txt').write_text('another face\n')
    opt = {'name': 'faces', 'type': 'FaceDegradationDataset', 'phase': 'train', 'dataroot_gt': str(tmp_path),
           'gt_size': 32}
    assert FaceDegradationDataset(opt).fallback_count == 1  # fallback (default): captioned, counted
    with pytest.raises(MissingCaptionError, match=re.escape(f"no caption for {tmp_path / 'b.png'}; 1 of 3 images")):
        FaceDegradationDataset({**opt, 'caption_policy': 'strict'})
    with pytest.raises(OptionError, match="'fallback', 'strict'"):
        FaceDegradationDataset({**opt, 'caption_policy': 'lenient'})


# ------------------------------------------------------------------------------------- 7. saving images
class Dim(nn.Module):
    """A "restorer" with fractional 8-bit outputs, so rounding and truncation differ: 0.7·x + 0.1."""

    def forward(self, x):
        return 0.7 * x + 0.1


if 'Dim' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(Dim)


def test_truncate_saves_floor_and_round_saves_tensor2img(tmp_path):
    lq_dir, gt_dir = write_pairs(str(tmp_path / 'data'))
    saved = {}
    for mode in ('round', 'truncate'):
        opt = make_test_opt(tmp_path / mode, paired(lq_dir, gt_dir), network={'type': 'Dim'},
                            val={'quantize': mode, 'save_img': False})
        run_test_model(opt)
        folder = osp.join(opt['path']['restored_root'], 'tiny', 'pairs')
        saved[mode] = {name: cv2.imread(osp.join(folder, name)) for name in sorted(os.listdir(folder))
                       if name.endswith('.png')}
    for name, rounded in saved['round'].items():
        lq = torch.from_numpy(cv2.imread(osp.join(lq_dir, name))[..., ::-1].astype(np.float32) / 255.0)
        out = Dim()(lq.permute(2, 0, 1)).clamp(0, 1)
        # the same float32 multiply by 255, then round (BasicSR) or the authors' cast to uint8: exact
        assert np.array_equal(rounded, tensor2img(out))
        truncated = (out * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()[..., ::-1]
        assert np.array_equal(saved['truncate'][name], truncated)
        # truncation lowers pixels by 0.5 DN on average (fractional parts spread evenly): a stated ±0.1 DN
        assert (rounded.astype(float) - saved['truncate'][name]).mean() == pytest.approx(0.5, abs=0.1)


# ------------------------------------------------------------------------------------- the option files
def test_authors_option_files_set_the_authors_behaviour():
    with open(osp.join(ROOT, 'options', 'refl_diffbir_authors.yml')) as f:
        real = yaml.safe_load(f)
    with open(osp.join(ROOT, 'options', 'refl_diffbir.yml')) as f:
        paper = yaml.safe_load(f)
    for opt, expected in ((real, ('last_microbatch', 'no', False, 'strict', 'bilinear')),
                          (paper, ('mean', 'auto', True, 'fallback', 'bicubic_antialias'))):
        train, data = opt['train'], opt['datasets']['train']
        assert (train['grad_accum_mode'], train['mixed_precision'], data['use_hflip'], data['caption_policy'],
                train['reward_opt']['frm']['resize']) == expected
        assert opt['network_g']['eta_per_update'] is True
    assert real['network_g']['weight_dtype'] == real['train']['reward_opt']['frm']['weight_dtype'] == 'fp32'
    assert real['train']['frm_update']['loss_weight'] == pytest.approx(paper['train']['frm_update']['loss_weight'] / 4)


def test_tiny_authors_option_file_runs_through_tools_train(tmp_path):
    name = f'pytest_authors_tiny_{os.getpid()}'
    opt = short_training_option('refl_diffbir_authors_tiny.yml', tmp_path, name, total_iter=2, every=2)
    path = tmp_path / 'authors_tiny.yml'
    path.write_text(yaml.safe_dump(opt))
    exp = osp.join(ROOT, 'experiments', name)
    try:
        result = run_tools_train(path)
        assert result.returncode == 0, result.stderr[-3000:]
        log = result.stdout + result.stderr
        assert 'grad_accum_mode: last_microbatch' in log and 'frm_updates: 1.0000e+00' in log
        assert osp.exists(osp.join(exp, 'models', 'net_g_2.safetensors')) and osp.exists(osp.join(exp, 'models',
                                                                                         'net_frm_2.pth'))
    finally:
        shutil.rmtree(exp, ignore_errors=True)
