"""The reward-hacking monitor: high-frequency energy, the reward gap under the current FRM, patience warnings."""

import pytest
import torch
import torch.nn.functional as F
from tolerances import TINY_REWARD_ATOL, rounding_tol

from drward.archs.frm_arch import build_frm
from drward.data.demo_faces import demo_face_tensor
from drward.models.hack_monitor import HackMonitor, HackStats, HighFrequencyEnergy


@pytest.fixture(scope='module')
def faces():
    return torch.stack([demo_face_tensor(64, i) for i in range(4)])


def test_hf_energy_orders_blur_noise_and_sharpening(faces):
    hf = HighFrequencyEnergy()
    g = torch.Generator().manual_seed(0)
    blurred = F.avg_pool2d(F.pad(faces, (1, 1, 1, 1), mode='replicate'), 3, 1)
    variants = [blurred, faces] + [(faces + s / 255 * torch.randn(faces.shape, generator=g)).clamp(0, 1)
                                   for s in (5, 15)] + [(2 * faces - blurred).clamp(0, 1)]
    ratios = [float(hf(v).sum() / hf(faces).sum()) for v in variants]
    assert ratios == sorted(ratios), ratios
    assert ratios[1] == 1.0  # the same kernels on the same input
    assert ratios[3] < 1.5 < ratios[4], ratios  # the default threshold: above σ = 15/255 noise, below unsharp 1.0


def test_stats_are_sums_over_batches_not_means_of_batch_values(faces, num_threads):
    frm, hf = build_frm({'model_name': 'tiny'}), HighFrequencyEnergy()
    captions = ['a face'] * 4
    restored = faces.flip(-1) * 0.9
    whole, parts = HackStats(), HackStats()
    whole.add(frm, hf, restored, faces, captions)
    for sl in (slice(0, 1), slice(1, 4)):
        parts.add(frm, hf, restored[sl], faces[sl], captions[sl])
    for key, value in whole.result().items():
        # batched vs split: different reduction orders in float32. Rewards are unit-scale cosines
        # (TINY_REWARD_ATOL); the high-frequency energies are sums over 3·64² pixels (relative rounding_tol)
        assert parts.result()[key] == pytest.approx(value, rel=rounding_tol(3 * 64 * 64), abs=TINY_REWARD_ATOL), key


def test_reward_gap_is_measured_under_the_frm_as_it_is_now(faces, num_threads):
    frm = build_frm({'model_name': 'tiny'})
    monitor = HackMonitor()
    captions = ['a face'] * 4
    restored = (faces + 0.1).clamp(0, 1)
    before = monitor.measure(frm, restored, faces, captions)['hack_reward_gap']
    with torch.no_grad():
        for p in frm.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    after = monitor.measure(frm, restored, faces, captions)['hack_reward_gap']
    with torch.no_grad():
        direct = float(frm.similarity(restored, captions).mean() - frm.similarity(faces, captions).mean())
    assert after == pytest.approx(direct, abs=TINY_REWARD_ATOL)  # same FRM and inputs; other summation orders
    assert abs(after - before) > 1e-3


def test_warning_names_the_iteration_after_patience_consecutive_logs(basicsr_warnings):
    monitor = HackMonitor({'patience': 3, 'gap_threshold': 0.0, 'hf_ratio_threshold': 1.5}, 'Toy')
    gaps = {10: 0.1, 20: 0.2, 30: -0.1, 40: 0.1, 50: 0.1, 60: 0.3, 70: 0.4}
    for it, gap in gaps.items():
        monitor.check({'hack_reward_gap': gap, 'hack_hf_ratio': 1.0}, it)
    monitor.check({'hack_reward_gap': 0.5, 'hack_hf_ratio': 2.0}, 80, stream='val/x')  # its own count
    assert monitor.alarms == [(60, 'train', 'hack_reward_gap', 0.3)]  # once per run above threshold
    assert 'possible reward hacking at iter 60 (train): hack_reward_gap = 0.3000 > 0' in basicsr_warnings.text


def test_unknown_monitor_option_lists_accepted_keys():
    with pytest.raises(Exception, match='accepted keys'):
        HackMonitor({'gap_treshold': 0.1})
