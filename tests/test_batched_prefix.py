"""The batched no-grad prefix (train.batched_prefix): the micro-batches' prefixes run as one batch per DDIM step and
give each sample the same draws (z_T, stop step, η, noise) and, within a stated tolerance, the same latents as the
micro-batch-by-micro-batch restorations; ReFLModel's step is the same with it on or off. (Resume with batching on
is checked bit for bit by tests/test_resume_bit_identical.py, which trains with batched_prefix: true.)"""
import pytest
import torch
from basicsr.models import build_model

from drward.archs.diffbir_arch import DiffBIRRestorer
from drward.models.batched_prefix import BatchedPrefix
from drward.utils.options import OptionError

pytestmark = pytest.mark.usefixtures('one_thread')

STEPS, WINDOW = 6, 3  # a short chain whose stop step varies over the last 3 indices: chunks leave at different steps
CHUNKS = [slice(0, 1), slice(1, 3), slice(3, 4)]  # uneven micro-batches, as _split makes for 4 faces / 3
# fp32 throughout; batch 4 vs batch 1/2 changes only the reduction order inside the tiny convolutions and attention
# (float32 eps ≈ 1.2e-7 relative per rounding); over ≤ 5 chained calls the latents agree to ≈ 3e-7 of their scale
# (measured), so 1e-5 (≈ 80 eps) leaves margin and still catches any wrong draw or wrong row (errors of order 1).
TOLERANCE = 1e-5


def _restorer():
    return DiffBIRRestorer(tiny=True, num_steps=STEPS, stop_window=WINDOW, seed=0).train()


def _lq(seed=0):
    return torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) / scale


def _sequential(net, lq, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        outs = [net.restore(lq[c], grad_steps=1, generator=generator) for c in CHUNKS]
    return outs, generator


def _batched(net, lq, seed, max_batch=None):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        prefixes = net.restore_prefixes(lq, CHUNKS, 1, generator=generator, max_batch=max_batch)
        outs = [net.restore(lq[c], grad_steps=1, generator=generator, **p) for c, p in zip(CHUNKS, prefixes)]
    return outs, generator


@pytest.mark.parametrize('max_batch', [None, 3])
def test_batched_prefix_gives_each_sample_its_own_draws_and_the_sequential_latents(max_batch):
    net, lq = _restorer(), _lq()
    seed = 3  # stops of the 3 chunks differ for this seed (asserted below), so chunks leave the batch early
    sequential, seq_gen = _sequential(net, lq, seed)
    batched, bat_gen = _batched(net, lq, seed, max_batch)
    stops = [o.info['stop_timestep'] for o in sequential]
    assert len(set(stops)) > 1, f'the seed should give different stop steps per chunk, got {stops}'
    for seq, bat in zip(sequential, batched):
        assert seq.info == bat.info  # same stop step, same η (drawn per update, logged as their mean), same count
        assert _max_rel_diff(seq.latent, bat.latent) < TOLERANCE
        assert _max_rel_diff(seq.image, bat.image) < TOLERANCE
    assert torch.equal(seq_gen.get_state(), bat_gen.get_state())  # the same draws, consumed in the same order


def test_batched_prefix_keeps_the_gradient_window_per_micro_batch():
    net, lq = _restorer(), _lq()
    generator = torch.Generator().manual_seed(0)
    prefixes = net.restore_prefixes(lq, CHUNKS, 1, generator=generator)
    out = net.restore(lq[CHUNKS[1]], grad_steps=1, generator=generator, **prefixes[1])
    assert out.image.requires_grad and len(out.reg_pairs) == 13  # one gradient-enabled call with its L_reg pairs
    out.image.mean().backward()
    assert all(p.grad is not None for p in net.controlnet.parameters() if p.requires_grad)


def _refl_opt(tmp_path, batched):
    return {
        'name': 'batched_prefix', 'model_type': 'ReFLModel', 'is_train': True, 'dist': False, 'rank': 0,
        'world_size': 1, 'num_gpu': 0, 'manual_seed': 5,
        'network_g': {'type': 'DiffBIRRestorer', 'tiny': True, 'num_steps': STEPS, 'stop_window': WINDOW},
        'path': {'models': str(tmp_path / 'm'), 'training_states': str(tmp_path / 's'), 'log': str(tmp_path),
                 'visualization': str(tmp_path / 'v'), 'resume_state': None, 'pretrain_network_g': None},
        'train': {'grad_accum': 3, 'grad_steps': 1, 'batched_prefix': batched, 'prefix_batch_size': 2,
                  'optim_g': {'type': 'AdamW', 'lr': 1e-3},
                  'reward_opt': {'type': 'RewardLoss', 'loss_weight': 1.0, 'frm': {'model_name': 'tiny'}},
                  'frm_update': {'enabled': False}, 'hack_monitor': {'enabled': False}},
    }


def test_refl_step_with_and_without_batched_prefix_agree(tmp_path):
    lq = _lq(1)
    data = {'lq': lq, 'gt': lq.flip(-1), 'caption': ['a face'] * 4}
    models = []
    for batched in (False, True):
        torch.manual_seed(0)
        model = build_model(_refl_opt(tmp_path / str(batched), batched))
        assert model.batched_prefix.enabled is batched
        model.feed_data(data)
        model.optimize_parameters(1)
        models.append(model)
    (seq, bat) = models
    assert seq.log_dict['stop_timestep'] == bat.log_dict['stop_timestep']
    assert torch.equal(seq.generator.get_state(), bat.generator.get_state())
    # one AdamW step of lr 1e-3 from the same weights: the updates differ only by the gradients' tolerance-level
    # differences; compare the updated weights relative to the update's own size (≤ lr per element)
    for (name, a), b in zip(seq.net_g.controlnet.named_parameters(), bat.net_g.controlnet.parameters()):
        assert float((a - b).abs().max()) <= 1e-3 * 1e-2, name
    for key in ('l_total', 'l_reward', 'reward_gt'):
        assert abs(seq.log_dict[key] - bat.log_dict[key]) <= TOLERANCE * max(abs(seq.log_dict[key]), 1.0), key


def test_prefix_batch_size_below_one_is_refused():
    with pytest.raises(OptionError, match='prefix_batch_size'):
        BatchedPrefix({'batched_prefix': True, 'prefix_batch_size': 0}, _restorer())


def test_compile_option_compiles_the_no_grad_denoiser_once_and_keeps_the_results(monkeypatch, caplog):
    """network_g.compile: the plumbing, with torch.compile replaced by a recording identity (a real inductor compile
    of even the tiny UNet takes minutes on this CPU; benchmarks/refl_step.py --compile measures the real one)."""
    compiled = []

    def fake_compile(fn, **kwargs):
        compiled.append(kwargs)
        return fn
    monkeypatch.setattr(torch, 'compile', fake_compile)
    plain = _restorer()
    net = DiffBIRRestorer(tiny=True, num_steps=STEPS, stop_window=WINDOW, seed=0, compile=True).train()
    lq = _lq()
    expected, _ = _batched(plain, lq, 3)
    with caplog.at_level('INFO', logger='basicsr'):
        got, _ = _batched(net, lq, 3)
    assert compiled == [{'dynamic': True}]  # once, for every later call and batch size
    assert 'compiled the no-grad denoiser' in caplog.text
    for a, b in zip(expected, got):
        assert torch.equal(a.latent, b.latent)  # the same eager kernels: bit-identical
