"""The order of operations around the networks follows each reference's own inference code (issue 14; docs/design.md §5
"Reference pipelines' order of operations"), pinned on tiny models:

* DiffBIR (``diffbir/pipeline.py``): short side upscaled to ``min_short_side``; SwinIR on the 64-padded input,
  its output cropped back, padded again for the VAE; decode, crop, wavelet fix, resize back, clamp;
* OSEDiff (``test_osediff.py``, ``osediff.py``): sides rounded to multiples of 8 (odd latents, no 64-padding);
  decode, clamp to [−1, 1], AdaIN in [0, 1], clamp to [0, 1].
"""
import pytest
import torch

from drward.archs.diffbir_arch import DiffBIRRestorer, _min_short_side
from drward.archs.image_sizes import resize_to, round_down_to_multiple, short_side_size
from drward.archs.osediff_arch import OSEDiffRestorer
from drward.archs.sd_parts import pad_to_multiple
from drward.utils.options import OptionError

pytestmark = pytest.mark.usefixtures('one_thread')


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _record_inputs(module, log, index=0):
    return module.register_forward_pre_hook(lambda _m, args: log.append(args[index].detach().clone()))


@pytest.fixture(scope='module')
def diffbir():
    return DiffBIRRestorer(tiny=True, num_steps=2, seed=0)


@pytest.fixture(scope='module')
def osediff():
    return OSEDiffRestorer(tiny=True, seed=0)


# -- sizes -------------------------------------------------------------------------------------------------------
def test_size_rules_are_the_references():
    assert short_side_size(64, 96, 128) == (128, 192)       # DiffBIR resize_short_edge_to: long side int(w·s/h)
    assert short_side_size(100, 50, 512) == (1024, 512)
    assert short_side_size(300, 300, 512) == (512, 512)
    assert short_side_size(600, 512, 512) == (600, 512)     # short side already there: unchanged
    assert short_side_size(64, 96, 0) == (64, 96)           # 0: off
    assert round_down_to_multiple(torch.zeros(1, 3, 70, 90), 8).shape[-2:] == (64, 88)
    assert resize_to(torch.rand(1, 3, 8, 8, dtype=torch.bfloat16), (16, 12)).dtype == torch.bfloat16
    assert _min_short_side(None, tiny=False) == 512 and _min_short_side(None, tiny=True) == 0
    with pytest.raises(OptionError, match='min_short_side'):
        DiffBIRRestorer(tiny=True, min_short_side=-1)


# -- DiffBIR -----------------------------------------------------------------------------------------------------
def test_diffbir_condition_encodes_the_cropped_then_padded_stage1(diffbir):
    lq, seen = _rand(1, 3, 200, 232), []
    hook = _record_inputs(diffbir.controlnet, seen, index=1)  # IRControlNet(z_t, cond, t, ctx)
    out = diffbir.restore(lq, generator=_gen())
    hook.remove()
    with torch.no_grad():
        stage1_padded = diffbir.stage1(pad_to_multiple(lq, 64))            # SwinIR on the 256×256 padding
        stage1 = stage1_padded[..., :200, :232]                            # cropped back
        expected = diffbir.sd.encode_latent(pad_to_multiple(stage1, 64) * 2 - 1)   # zero-padded again
        uncropped = diffbir.sd.encode_latent(stage1_padded * 2 - 1)        # what drward encoded before issue 14
    # the same modules on the same tensors: the same kernels, bit-identical
    assert all(torch.equal(cond, expected) for cond in seen) and len(seen) == 2
    assert not torch.allclose(expected, uncropped, atol=1e-3)  # the edges differ: the check can fail
    assert out.image.shape == out.stage1.shape == (1, 3, 200, 232) and out.latent.shape == (1, 4, 32, 32)
    torch.testing.assert_close(out.stage1, (stage1 * 2 - 1).clamp(-1, 1), rtol=0, atol=0)


def test_diffbir_aligned_inputs_skip_every_size_step(diffbir):
    """A 64² input (the tiny 512²) is neither resized, padded nor cropped: training sees D(ẑ_0) as before."""
    lq, seen = _rand(1, 3, 64, 64, seed=1), []
    hook = _record_inputs(diffbir.stage1, seen)
    out = diffbir.restore(lq, grad_steps=1, generator=_gen())
    hook.remove()
    assert torch.equal(seen[0], lq)
    with torch.no_grad():
        torch.testing.assert_close(out.image, diffbir.sd.decode_latent(out.latent), rtol=0, atol=0)


def test_diffbir_upscales_a_short_side_before_stage1_and_resizes_back():
    restorer, seen = DiffBIRRestorer(tiny=True, num_steps=2, min_short_side=128), []
    hook = _record_inputs(restorer.stage1, seen)
    out = restorer.restore(_rand(1, 3, 64, 96), generator=_gen())
    hook.remove()
    assert seen[0].shape[-2:] == (128, 192)                 # 64×96 → short side 128 (a multiple of 64: no pad)
    assert out.latent.shape[-2:] == (16, 24)
    assert out.image.shape[-2:] == out.stage1.shape[-2:] == (64, 96)
    assert out.image.min() >= -1 and out.image.max() <= 1
    restorer.min_short_side, seen = 0, []
    hook = _record_inputs(restorer.stage1, seen)
    restorer.restore(_rand(1, 3, 64, 96), generator=_gen())
    hook.remove()
    assert seen[0].shape[-2:] == (64, 128)                  # off: only the zero padding to 64


@pytest.mark.heavy
def test_diffbir_short_side_upscaling_runs_with_bf16_weights():
    restorer = DiffBIRRestorer(tiny=True, num_steps=2, min_short_side=128, weight_dtype='bf16')
    out = restorer.restore(_rand(1, 3, 64, 96), generator=_gen())
    assert out.image.shape[-2:] == (64, 96) and out.image.dtype == torch.float32
    assert torch.isfinite(out.image).all()


# -- OSEDiff -----------------------------------------------------------------------------------------------------
def _osediff_reference_finish(decoded, source01):
    """OSEDiff's own steps, written out: clamp (osediff.py), to [0, 1], calc_mean_std with unbiased variance
    + 1e-5 (my_utils/wavelet_color_fix.py), AdaIN, clamp to [0, 1]."""
    x = decoded.clamp(-1, 1) * 0.5 + 0.5

    def stats(t):
        flat = t.reshape(*t.shape[:2], -1)
        return flat.mean(-1)[..., None, None], (flat.var(-1) + 1e-5).sqrt()[..., None, None]
    (mean, std), (ref_mean, ref_std) = stats(x), stats(source01)
    return ((x - mean) / std * ref_std + ref_mean).clamp(0, 1) * 2 - 1


def test_osediff_overshooting_output_gets_clamp_adain_clamp(osediff, monkeypatch):
    decode = osediff.sd.decode_latent
    monkeypatch.setattr(osediff.sd, 'decode_latent', lambda z: decode(z) * 3)  # a decoder that overshoots
    lq = _rand(1, 3, 64, 64, seed=2)
    out = osediff.restore(lq, generator=_gen())
    with torch.no_grad():
        decoded = decode(out.latent) * 3
    assert (decoded.abs() > 1).float().mean() > 0.05
    expected = _osediff_reference_finish(decoded, lq)
    # the same formula through other tensor ops (mean/var over a reshape vs over two dims): float rounding
    torch.testing.assert_close(out.image, expected, rtol=0, atol=1e-5)
    signed = lq * 2 - 1  # drward before issue 14: AdaIN in [-1, 1] on the unclamped output, then the clamp
    (mean, std), (ref_mean, ref_std) = [(t.mean((-2, -1), keepdim=True), (t.var((-2, -1), keepdim=True) + 1e-5).sqrt())
                                        for t in (decoded, signed)]
    old_order = ((decoded - mean) / std * ref_std + ref_mean).clamp(-1, 1)
    assert (out.image - old_order).abs().max() > 1e-2  # the check can fail


def test_osediff_runs_on_multiple_of_8_latents_and_returns_the_input_size(osediff):
    seen = []
    hook = _record_inputs(osediff.sd.unet, seen)
    out_8 = osediff.restore(_rand(1, 3, 72, 88), generator=_gen())      # 9×11 latent: odd, no padding
    out_odd = osediff.restore(_rand(1, 3, 70, 90), generator=_gen())    # rounded down to 64×88
    hook.remove()
    assert [tuple(x.shape[-2:]) for x in seen] == [(9, 11), (8, 11)]
    assert out_8.image.shape[-2:] == (72, 88) and out_odd.image.shape[-2:] == (70, 90)
    assert torch.isfinite(out_odd.image).all() and out_odd.image.abs().max() <= 1
