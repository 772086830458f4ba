"""DiffBIRRestorer (tiny): what is trained, how far the graph reaches, the L_reg pairs, saving, options, files."""
import pytest
import tiny_weights as T
import torch
from tolerances import TINY_SD_GRAD_RTOL, TINY_SD_WIDEST, rounding_tol

from drward.archs.diffbir_arch import DiffBIRRestorer
from drward.archs.sd_parts import SDParts
from drward.archs.tiny_configs import TINY_FACE_SWINIR, TINY_SD
from drward.utils.options import MissingWeightsError, OptionError

STEPS = 8  # a short chain keeps these tests fast; the gradient window logic does not depend on K


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture
def restorer():
    return DiffBIRRestorer(tiny=True, num_steps=STEPS, seed=0).train()


def _lq(batch=2, size=64, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| over the larger of the two tensors' max magnitudes (a scale-free distance)."""
    scale = max(a.detach().abs().max().item(), b.detach().abs().max().item(), 1e-12)
    return (a.detach() - b.detach()).abs().max().item() / scale


def _count_calls(module, log, name):
    def hook(_module, args, kwargs):
        log.append((name, torch.is_grad_enabled(), args[0].grad_fn is None))
    return module.register_forward_pre_hook(hook, with_kwargs=True)


def test_gradient_reaches_exactly_the_controlnet_parameters(restorer):
    out = restorer.restore(_lq(), ['a face', 'a face'], grad_steps=1, generator=_gen())
    out.image.sum().backward()
    controlnet = dict(restorer.controlnet.named_parameters())
    assert {id(p) for p in restorer.trainable_parameters()} == {id(p) for p in controlnet.values()}
    assert all(p.grad is not None for p in controlnet.values())
    assert sum(bool(p.grad.abs().sum() > 0) for p in controlnet.values()) > 0.9 * len(controlnet)
    for name, parameter in restorer.named_parameters():
        if not name.startswith('controlnet.'):  # UNet, VAE, text tower, SwinIR, frozen reference
            assert parameter.grad is None and not parameter.requires_grad, name


def test_one_grad_step_spans_one_denoiser_call_and_the_reference_runs_only_there(restorer):
    calls = []
    hooks = [_count_calls(restorer.sd.unet, calls, 'unet'), _count_calls(restorer.controlnet, calls, 'control'),
             _count_calls(restorer.controlnet_ref, calls, 'reference')]
    out = restorer.restore(_lq(), grad_steps=1, generator=_gen(), stop_index=STEPS - 2)
    for hook in hooks:
        hook.remove()
    with_grad = [(name, leaf) for name, grad, leaf in calls if grad]
    assert with_grad == [('control', True), ('unet', True)]  # z_t enters the grad call with no history
    assert [name for name, _, _ in calls].count('unet') == STEPS - 1  # stop index s = K − 2: s + 1 calls
    assert [(name, grad) for name, grad, _ in calls if name == 'reference'] == [('reference', False)]
    assert out.info['stop_timestep'] == float(restorer.sampler.timesteps[STEPS - 2])
    assert len(out.reg_pairs) == 13


def test_n_grad_steps_keep_the_graph_over_n_calls(restorer):
    calls = []
    hook = _count_calls(restorer.sd.unet, calls, 'unet')
    out = restorer.restore(_lq(), grad_steps=3, generator=_gen(), stop_index=STEPS - 1)
    hook.remove()
    assert [grad for _, grad, _ in calls] == [False] * (STEPS - 3) + [True] * 3
    assert len(out.reg_pairs) == 3 * 13 and out.info['grad_calls'] == 3


def test_reg_pairs_equal_at_construction_and_differ_after_a_controlnet_change(restorer):
    out = restorer.restore(_lq(), grad_steps=1, generator=_gen())
    # Same weights, same inputs, but two computation paths: the trained copy runs with gradient, the frozen one
    # under no_grad, and the CPU backend may pick different conv kernels for each (measured: up to 3.6e-7 apart).
    # 1e-5 relative to the residual's scale is far above that float32 rounding and far below the change below.
    assert all(_max_rel_diff(trained, frozen) < 1e-5 for trained, frozen in out.reg_pairs)
    assert not any(frozen.requires_grad for _, frozen in out.reg_pairs)
    assert all(trained.requires_grad for trained, _ in out.reg_pairs)
    with torch.no_grad():
        restorer.controlnet.conv_in.bias.add_(0.1)
    out = restorer.restore(_lq(), grad_steps=1, generator=_gen())
    assert all(_max_rel_diff(trained, frozen) > 1e-3 for trained, frozen in out.reg_pairs)
    assert not torch.equal(restorer.controlnet_ref.conv_in.bias, restorer.controlnet.conv_in.bias)


def test_trained_state_dict_round_trips_to_identical_outputs(tmp_path):
    first = DiffBIRRestorer(tiny=True, num_steps=STEPS, seed=0)
    with torch.no_grad():
        first.controlnet.controlnet_mid_block.weight.mul_(3.0)
    state = first.trained_state_dict()
    assert set(state) == set(first.controlnet.state_dict())
    torch.save(state, tmp_path / 'net_g.pth')
    second = DiffBIRRestorer(tiny=True, num_steps=STEPS, seed=0)
    before = second.restore(_lq(), generator=_gen(7)).image
    second.load_trained_state_dict(torch.load(tmp_path / 'net_g.pth'))
    after = second.restore(_lq(), generator=_gen(7)).image
    expected = first.restore(_lq(), generator=_gen(7)).image
    assert torch.equal(after, expected) and not torch.equal(before, expected)


def test_same_seed_same_image_other_seed_other_image(restorer):
    a = restorer.restore(_lq(), generator=_gen(1)).image
    b = restorer.restore(_lq(), generator=_gen(1)).image
    c = restorer.restore(_lq(), generator=_gen(2)).image
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tiny_restores_a_batch_with_the_default_fifty_steps():
    restorer = DiffBIRRestorer(tiny=True)
    assert restorer.is_tiny and restorer.sampler.num_steps == 50
    out = restorer.restore(_lq(), generator=_gen())
    assert out.image.shape == (2, 3, 64, 64) and torch.isfinite(out.image).all()
    assert out.image.min() >= -1 and out.image.max() <= 1
    assert out.stage1.shape == (2, 3, 64, 64) and out.latent.shape == (2, 4, 8, 8)
    assert not out.image.requires_grad and out.reg_pairs == []


def test_color_fix_changes_only_the_inference_output():
    plain = DiffBIRRestorer(tiny=True, num_steps=STEPS, color_fix=False)
    fixed = DiffBIRRestorer(tiny=True, num_steps=STEPS, color_fix=True)
    out_plain, out_fixed = plain.restore(_lq(), generator=_gen()), fixed.restore(_lq(), generator=_gen())
    assert torch.equal(out_plain.latent, out_fixed.latent)
    # the output is clamped in [0, 1] (DiffBIR's uint8 conversion) and mapped back: float rounding only
    torch.testing.assert_close(out_plain.image, plain.sd.decode_latent(out_plain.latent).clamp(-1, 1),
                               rtol=0, atol=1e-6)
    assert not torch.equal(out_plain.image, out_fixed.image)


def test_sides_that_are_not_multiples_of_64_are_padded_and_cropped(restorer):
    out = restorer.restore(torch.rand(1, 3, 72, 80), generator=_gen())
    assert out.image.shape == (1, 3, 72, 80) and out.stage1.shape == (1, 3, 72, 80)


def test_train_mode_keeps_frozen_parts_in_eval(restorer):
    restorer.train()
    assert restorer.controlnet.training
    assert not any(m.training for m in (restorer.sd, restorer.stage1, restorer.controlnet_ref))
    assert not any(m.training for m in restorer.stage1.modules())


def test_empty_prompt_context_is_computed_once(restorer):
    calls = []
    hook = restorer.sd.text_encoder.register_forward_pre_hook(lambda *_: calls.append(1))
    restorer.restore(_lq(), ['one caption', 'another'], generator=_gen())
    restorer.restore(_lq(), ['captions never reach SD'] * 2, grad_steps=1, generator=_gen())
    hook.remove()
    assert len(calls) <= 1


def test_gradient_checkpointing_covers_decoder_unet_controlnet_and_keeps_gradients(num_threads):
    grads = []
    for enabled in (False, True):
        restorer = DiffBIRRestorer(tiny=True, num_steps=STEPS, gradient_checkpointing=enabled).train()
        assert restorer.sd.vae.decoder.gradient_checkpointing == enabled
        assert restorer.sd.unet.down_blocks[0].gradient_checkpointing == enabled
        assert restorer.controlnet.down_blocks[0].gradient_checkpointing == enabled
        restorer.restore(_lq(batch=1), grad_steps=1, generator=_gen()).image.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in restorer.trainable_parameters()]))
    # checkpointing recomputes the activations inside backward: float32 rounding over the backward pass, relative
    # to the gradients' own size (TINY_SD_GRAD_RTOL); an element near zero sums terms as large as the largest
    # gradient element, so its last reduction rounds on that scale (atol)
    atol = rounding_tol(TINY_SD_WIDEST, float(grads[0].abs().max()))
    assert torch.allclose(grads[0], grads[1], rtol=TINY_SD_GRAD_RTOL, atol=atol)


def test_control_scales_scale_the_residuals():
    base = DiffBIRRestorer(tiny=True, num_steps=STEPS)
    off = DiffBIRRestorer(tiny=True, num_steps=STEPS, control_scales=[0.0] * 13)
    assert not torch.equal(base.restore(_lq(), generator=_gen()).latent, off.restore(_lq(), generator=_gen()).latent)
    with pytest.raises(ValueError, match='13'):
        DiffBIRRestorer(tiny=True, control_scales=[1.0, 0.5])


def test_unknown_option_lists_the_accepted_keys():
    with pytest.raises(OptionError, match='accepted keys.*diffbir_checkpoint'):
        DiffBIRRestorer(tiny=True, sd_ckpt='x')


@pytest.mark.parametrize('key', ['sd_checkpoint', 'diffbir_checkpoint', 'swinir_checkpoint'])
def test_missing_checkpoint_raises_one_line_naming_the_option_key(tmp_path, key):
    paths = {}
    for name, file in (('sd_checkpoint', 'v2-1_512-ema-pruned.ckpt'), ('diffbir_checkpoint', 'v1_face.pth'),
                       ('swinir_checkpoint', 'face_swinir_v1.ckpt')):
        paths[name] = str(tmp_path / file)
        if name != key:
            (tmp_path / file).write_bytes(b'')
    with pytest.raises(MissingWeightsError) as error:
        DiffBIRRestorer(**paths)
    message = str(error.value)
    assert f'option key {key}' in message and paths[key] in message and '\n' not in message


def test_tiny_checkpoint_files_load_through_the_options(tmp_path):
    torch.manual_seed(3)
    parts = T.randomize_(SDParts(TINY_SD), seed=3)
    source = DiffBIRRestorer(tiny=True, num_steps=STEPS, seed=5)
    T.randomize_(source.stage1, seed=4)
    paths = dict(sd_checkpoint=T.save_tiny_sd_checkpoint(parts, str(tmp_path / 'sd.ckpt')),
                 diffbir_checkpoint=T.save_tiny_diffbir_controlnet(source.controlnet, str(tmp_path / 'v1_face.pth')),
                 swinir_checkpoint=T.save_tiny_face_swinir(source.stage1, str(tmp_path / 'swinir.ckpt')))
    loaded = DiffBIRRestorer(tiny=True, num_steps=STEPS, seed=9, **paths)
    for ours, theirs in ((loaded.sd, parts), (loaded.controlnet, source.controlnet),
                         (loaded.controlnet_ref, source.controlnet), (loaded.stage1, source.stage1)):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert TINY_FACE_SWINIR['embed_dim'] == loaded.stage1.embed_dim
