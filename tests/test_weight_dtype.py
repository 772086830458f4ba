"""weight_dtype: bf16 storage of frozen weights, fp32 masters for trained ones (DiffBIR, OSEDiff, FRM)."""
import pytest
import torch

from drward.archs.diffbir_arch import DiffBIRRestorer
from drward.archs.frm_arch import FaceRewardModel
from drward.archs.osediff_arch import OSEDiffRestorer
from drward.archs.precision import ComputeCopy, parse_weight_dtype
from drward.utils.options import OptionError

STEPS = 4
RESTORERS = [(DiffBIRRestorer, dict(num_steps=STEPS)), (OSEDiffRestorer, {})]
IDS = ['diffbir', 'osediff']


def _lq():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _restore(net, **kw):
    return net.restore(_lq(), generator=torch.Generator().manual_seed(1), **kw)


@pytest.mark.parametrize('cls,kw', RESTORERS, ids=IDS)
def test_bf16_restore_agrees_with_fp32(cls, kw):
    fp32, bf16 = cls(tiny=True, **kw), cls(tiny=True, weight_dtype='bf16', **kw)
    with torch.no_grad():
        a, b = _restore(fp32).image, _restore(bf16).image
    assert b.dtype == torch.float32
    # bf16 keeps 8 mantissa bits (relative rounding 2^-9 per weight and activation); through a few tiny random
    # networks that compounds to a few percent of the image's scale at worst, ~1 % on average
    assert (a - b).abs().mean() < 0.02 * a.abs().mean() + 0.01
    assert (a - b).abs().max() < 0.2


@pytest.mark.parametrize('cls,kw', RESTORERS, ids=IDS)
def test_bf16_gradients_reach_exactly_the_fp32_masters(cls, kw):
    net = cls(tiny=True, weight_dtype='bf16', **kw)
    trained = {id(p) for p in net.trainable_parameters()}
    out = _restore(net, grad_steps=1)
    (out.image.mean() + sum(((c - r) ** 2).mean() for c, r in out.reg_pairs)).backward()
    for name, p in net.named_parameters():
        if id(p) in trained:
            assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, name
        else:
            assert p.dtype == torch.bfloat16 and p.grad is None, name


@pytest.mark.heavy
@pytest.mark.parametrize('cls,kw', RESTORERS, ids=IDS)
def test_trained_state_moves_between_bf16_and_fp32_runs(cls, kw):
    bf16 = cls(tiny=True, weight_dtype='bf16', **kw)
    with torch.no_grad():
        for p in bf16.trainable_parameters():
            p.add_(0.01)
    state = {k: v.clone() for k, v in bf16.trained_state_dict().items()}
    assert all(v.dtype == torch.float32 for v in state.values())
    fp32 = cls(tiny=True, **kw)
    fp32.load_trained_state_dict(state)
    back = cls(tiny=True, weight_dtype='bf16', **kw)
    back.load_trained_state_dict(fp32.trained_state_dict())
    for key, value in state.items():  # the same tensors, copied: exact
        assert torch.equal(fp32.trained_state_dict()[key], value) and torch.equal(back.trained_state_dict()[key], value)
    with torch.no_grad():  # and the bf16 restorer runs the loaded weights (its compute copy was refreshed)
        assert torch.equal(_restore(back).image, _restore(bf16).image)


def test_compute_copy_is_cached_until_a_master_changes():
    net = torch.nn.Linear(4, 3)
    copy = ComputeCopy(net, torch.bfloat16)
    twin = copy.refresh(with_grad=False)
    first = twin.weight
    assert first.dtype == torch.bfloat16 and copy.refresh(with_grad=False).weight is first
    with torch.no_grad():
        net.weight.add_(1.0)
    assert copy.refresh(with_grad=False).weight is not first
    x = torch.randn(2, 4)
    copy.refresh(with_grad=True)(x.bfloat16()).float().sum().backward()
    # d(sum(W_c x + b))/dW = sum over the batch of x, through the cast: within bf16 rounding of the product
    torch.testing.assert_close(net.weight.grad, x.sum(0).expand(3, 4), rtol=1e-2, atol=1e-2)


def test_released_casts_are_remade_for_the_next_restore_and_reward():
    # the generator step and the FRM update drop their bf16 casts (stale after the step) to free memory
    net = DiffBIRRestorer(tiny=True, weight_dtype='bf16', num_steps=STEPS)
    with torch.no_grad():
        before = _restore(net).image
    assert net._compute.nbytes() > 0
    net.release_compute_caches()
    assert net._compute.nbytes() == 0
    with torch.no_grad():  # the same casts remade from the same masters, the same kernels: identical
        assert torch.equal(_restore(net).image, before)
    frm = FaceRewardModel(model_name='tiny', unlocked_image_groups=2, unlocked_text_layers=1, weight_dtype='bf16')
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reward = frm.similarity(images, ['a', 'b'], frozen=True)
    frm.release_compute_cache()
    assert not frm._frozen_casts[1]
    assert torch.equal(frm.similarity(images, ['a', 'b'], frozen=True), reward)


def test_frm_bf16_stores_locked_layers_in_bf16_and_agrees_with_fp32():
    opts = dict(model_name='tiny', unlocked_image_groups=2, unlocked_text_layers=1)
    torch.manual_seed(0)
    fp32 = FaceRewardModel(**opts)
    torch.manual_seed(0)
    bf16 = FaceRewardModel(weight_dtype='bf16', **opts)
    for p in bf16.clip.parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # cosines in [-1, 1] through a 4-block tiny CLIP in bf16: a few 1e-3 of rounding
    torch.testing.assert_close(bf16.similarity(images, ['a', 'b'], frozen=True),
                               fp32.similarity(images, ['a', 'b'], frozen=True), atol=2e-2, rtol=0)
    bf16.preference_logits(images, images.flip(0), ['a', 'b']).sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in bf16.clip.parameters())


def test_weight_dtype_rejects_unknown_values():
    assert parse_weight_dtype('bf16') == torch.bfloat16 and parse_weight_dtype(None) == torch.float32
    with pytest.raises(OptionError, match='fp32'):
        DiffBIRRestorer(tiny=True, weight_dtype='fp16')
