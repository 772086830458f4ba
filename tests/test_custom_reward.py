"""A reward of one's own, in ONE file: this one. It registers a differentiable reward and trains with it through an
option file and tools/train.py, with no other file of the repo edited (docs/rewards.md shows the same steps).

The reward: ``r(Î') = −(mean(Î') − target)²``, highest when the face's mean brightness is ``target``. It uses no
captions and has nothing to train (``trainable = False``): the FRM beside it stays the one the dynamic update trains.
"""
import os

import pytest
import torch
from basicsr.models import build_model

from drward.archs.reward import REWARD_REGISTRY, Reward
from drward.utils.registry import register

# tools/train.py imports this file by path (the option file's `module:`): test helpers are imported inside the tests


@register(REWARD_REGISTRY)
class MeanBrightnessReward(Reward):
    """``r = −(mean_{c,h,w} Î' − target)²`` per image; differentiable."""

    name = 'brightness'

    def __init__(self, target: float = 0.6):
        super().__init__()
        self.target = float(target)

    def score(self, images, captions=None, grad=False):
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return -(images.float().mean(dim=(1, 2, 3)) - self.target) ** 2


def rewards_entry(**extra):
    return {'type': 'MeanBrightnessReward', 'module': os.path.abspath(__file__), 'loss_weight': 0.5, **extra}


def test_the_reward_loss_weights_each_reward_and_the_gradient_reaches_the_image():
    from drward.losses.reward_loss import RewardLoss
    loss = RewardLoss(rewards=[{'type': 'FaceRewardModel', 'model_name': 'tiny', 'loss_weight': 1.0},
                               rewards_entry(target=0.7)])
    pred = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).requires_grad_()
    total = loss(pred, captions=['a face', 'a face'])
    total.backward()
    brightness = -((pred.detach() + 1) / 2).mean(dim=(1, 2, 3)).sub(0.7).pow(2)
    terms = loss.last_terms
    assert list(terms) == ['l_reward_frm', 'l_reward_brightness']
    # the same float32 formula on the same tensors, but a different reduction order: a few ulps
    assert float(terms['l_reward_brightness']) == pytest.approx(0.5 * float((-brightness).mean()), rel=1e-5)
    assert float(total) == pytest.approx(float(terms['l_reward_frm'] + terms['l_reward_brightness']), rel=1e-6)
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    assert loss.trained is loss.rewards[0] and loss.primary is loss.rewards[0]


def test_a_reward_alone_trains_the_generator_without_a_dynamic_update(tmp_path):
    import toy_restorer  # noqa: F401  (registers ToyRestorer)
    from test_refl_model import batch, make_opt
    opt = make_opt(tmp_path, reward_opt={'type': 'RewardLoss', 'rewards': [rewards_entry()]})
    model = build_model(opt)
    assert model.frm is None and model.frm_update.optimizer is None and model.optimizers == [model.optimizer_g]
    before = {k: v.clone() for k, v in model.net_g.trained_state_dict().items()}
    model.feed_data(batch())
    model.optimize_parameters(3)  # an iteration the FRM update would run on: nothing to update
    log = model.get_current_log()
    assert 'frm_acc' not in log and 'l_reward' in log and 'reward_gt' in log and 'hack_reward_gap' in log
    after = model.net_g.trained_state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_tools_train_runs_with_the_reward_named_in_the_option_file(tmp_path):
    from option_files import ROOT, run_tools_train, short_training_option, write_options
    name = f'pytest_custom_reward_{os.getpid()}'
    opt = short_training_option('refl_diffbir_tiny.yml', tmp_path, name, total_iter=2, every=2)
    opt['train']['reward_opt'] = {'type': 'RewardLoss', 'fallback_caption': 'a high-quality photo of a face',
                                  'rewards': [{'type': 'FaceRewardModel', 'model_name': 'tiny', 'loss_weight': 1.0},
                                              rewards_entry()]}
    exp = os.path.join(ROOT, 'experiments', name)
    try:
        result = run_tools_train(write_options(opt, tmp_path / 'custom_reward.yml'))
        assert result.returncode == 0, result.stderr[-3000:]
        log = result.stdout + result.stderr
        assert 'l_reward_brightness: ' in log and 'l_reward_frm: ' in log and 'hack_reward_gap_brightness: ' in log
        assert os.path.exists(os.path.join(exp, 'models', 'net_frm_2.pth'))  # the FRM beside it was updated
        # the generator trained with the reward restores through tools/restore.py like any checkpoint
        import cv2
        import numpy as np
        from test_restore_tool import run_restore
        faces = tmp_path / 'faces_in'
        faces.mkdir()
        cv2.imwrite(str(faces / 'face.png'), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
        restored = run_restore('-i', faces, '-o', tmp_path / 'out', '--opt', tmp_path / 'custom_reward.yml',
                               '--checkpoint', os.path.join(exp, 'models', 'net_g_2.safetensors'), '--aligned',
                               '--face-size', 64, '--no-progress')
        assert restored.returncode == 0, restored.stderr[-3000:]
        assert cv2.imread(str(tmp_path / 'out' / 'restored_imgs' / 'face.png')).shape == (64, 64, 3)
    finally:
        import shutil
        shutil.rmtree(exp, ignore_errors=True)
        shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)
