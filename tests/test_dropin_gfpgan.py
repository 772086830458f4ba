"""The GFPGAN drop-in example: GFPGAN's own GFPGANModel trains with drward's losses in its pixel_opt slot
(options/dropin_gfpgan_tiny.yml). Needs the gfpgan package (requirements-nodeps.txt; tools/run.sh installs it)."""
import os
import os.path as osp
import re
import shutil

import pytest
import torch
import yaml
from basicsr.data import build_dataset
from basicsr.models import build_model
from option_files import ROOT, load_option_file, run_tools_train

from drward.utils import basicsr_compat

gfpgan = pytest.importorskip('gfpgan', reason='pip install --no-deps -r requirements-nodeps.txt (gfpgan)')


@pytest.fixture(scope='module')
def model_and_batch(tmp_path_factory):
    basicsr_compat.install()  # what tools/train.py does: float Adam betas, BasicSR's fused leaky ReLU without its ext
    opt = load_option_file('dropin_gfpgan_tiny.yml', tmp_path_factory.mktemp('gfpgan'))
    torch.manual_seed(0)
    train_set = build_dataset(opt['datasets']['train'])
    batch = {key: torch.stack([train_set[i][key] for i in range(4)]) for key in ('lq', 'gt')}
    return build_model(opt), batch


def test_the_example_trains_gfpgans_own_model_with_images_in_minus_one_one(model_and_batch):
    model, batch = model_and_batch
    assert type(model).__module__ == 'gfpgan.models.gfpgan_model'
    assert type(model.net_g).__name__ == 'GFPGANv1Clean' and type(model.net_d).__name__ == 'StyleGAN2Discriminator'
    assert not model.use_facial_disc and not model.use_identity
    assert model.cri_pix.names == ['L1Loss', 'DWTLoss', 'RewardLoss']
    assert batch['gt'].min() < -0.5 and batch['gt'].max() <= 1.0  # GFPGAN's mean/std 0.5: [-1, 1]


def test_the_reward_term_alone_reaches_the_generators_encoder_and_decoder(model_and_batch, one_thread):
    model, batch = model_and_batch
    model.net_g.zero_grad(set_to_none=True)
    output, _ = model.net_g(batch['lq'], return_rgb=False)
    reward = model.cri_pix.parts[model.cri_pix.names.index('RewardLoss')]
    reward(output).backward()
    grads = {name: p.grad for name, p in model.net_g.named_parameters() if p.grad is not None}
    for part in ('conv_body_first', 'condition_scale', 'stylegan_decoder'):  # U-Net encoder, SFT, StyleGAN decoder
        norm = sum(float(g.norm()) for name, g in grads.items() if name.startswith(part))
        assert norm > 0 and torch.isfinite(torch.tensor(norm)), part
    model.net_g.zero_grad(set_to_none=True)


def test_one_gfpgan_step_computes_the_reward_term_in_its_pixel_slot(model_and_batch, one_thread):
    model, batch = model_and_batch
    model.feed_data(batch)
    model.optimize_parameters(1)
    terms = model.cri_pix.last_terms
    assert set(terms) == {'L1Loss', 'DWTLoss', 'RewardLoss'} and float(terms['RewardLoss']) > 0
    # GFPGAN logs the slot's total: its three terms (each already weighted), summed
    assert model.get_current_log()['l_g_pix'] == pytest.approx(sum(float(v) for v in terms.values()), rel=1e-5)


def test_tools_train_runs_the_example_and_logs_the_reward_term(tmp_path):
    with open(osp.join(ROOT, 'options', 'dropin_gfpgan_tiny.yml')) as f:
        opt = yaml.safe_load(f)
    opt['name'] = name = f'pytest_gfpgan_{os.getpid()}'
    for dataset in opt['datasets'].values():
        dataset['dataroot_gt'] = str(tmp_path / 'demo_faces_64')
    opt['train'].update(total_iter=4)
    opt['train']['pixel_opt']['log_every'] = 2
    opt['val'].update(val_freq=100)  # validation once, at the end
    opt['logger'].update(print_freq=2, save_checkpoint_freq=4)
    path = tmp_path / 'gfpgan.yml'
    path.write_text(yaml.safe_dump(opt))
    try:
        result = run_tools_train(path)
        assert result.returncode == 0, result.stderr[-3000:]
        log = result.stderr + result.stdout
        assert 'Model [GFPGANModel] is created.' in log
        rewards = [float(v) for v in re.findall(r'CompositeLoss terms \(call \d+\): .*RewardLoss ([0-9.e+-]+)', log)]
        assert len(rewards) == 2 and all(0 < r < 0.01 for r in rewards), rewards  # 0.005 · (1 − cos) ∈ (0, 0.01)
        assert 'l_g_pix' in log and '# psnr' in log
    finally:
        shutil.rmtree(osp.join(ROOT, 'experiments', name), ignore_errors=True)
