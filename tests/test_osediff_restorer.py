"""OSEDiffRestorer (tiny): what is trained, the one step, the L_reg pairs, prompts, saving, the osediff.pkl layout,
options, and the tiny ReFL run through its option file."""
import os

import pytest
import tiny_weights as T
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from option_files import load_option_file
from tolerances import TINY_SD_GRAD_RTOL, TINY_SD_WIDEST, rounding_tol

from drward.archs.lora import discover_layout, is_lora_name
from drward.archs.osediff_arch import OSEDiffRestorer
from drward.archs.sd_parts import SDParts
from drward.archs.tiny_configs import TINY_SD
from drward.diffusion.schedule import sd_alphas_cumprod
from drward.utils.options import MissingWeightsError, OptionError
from drward.weights.common import ConversionError
from drward.weights.osediff import osediff_checkpoint_dict, read_lora_file, save_lora_safetensors

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def restorer():
    """Default options (posterior sample, AdaIN colour fix, adapters-off reference); tests must not change it."""
    return OSEDiffRestorer(tiny=True, seed=0).train()


@pytest.fixture(scope='module')
def plain():
    """Deterministic encode (posterior mode), no colour fix, fallback prompt 'a face'; tests must not change it."""
    return OSEDiffRestorer(tiny=True, vae_latent='mode', color_fix='none', fallback_prompt='a face')


def _lq(batch=2, size=64, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _trained_names(restorer, conv_in):
    return {f'{side}.{name}' for side, model in (('unet', restorer.sd.unet), ('vae', restorer.sd.vae))
            for name, _ in model.named_parameters()
            if is_lora_name(name) or (conv_in and side == 'unet' and name.startswith('conv_in.'))}


@pytest.mark.parametrize('conv_in', [True, False])
def test_gradient_reaches_exactly_the_lora_factors_and_conv_in_when_enabled(conv_in):
    restorer = OSEDiffRestorer(tiny=True, train_conv_in=conv_in).train()
    out = restorer.restore(_lq(), ['a face', 'a face'], grad_steps=1, generator=_gen())
    (out.image.sum() + sum((a - b).pow(2).mean() for a, b in out.reg_pairs)).backward()
    named = {f'{side}.{name}': p for side, model in (('unet', restorer.sd.unet), ('vae', restorer.sd.vae))
             for name, p in model.named_parameters()}
    trained = _trained_names(restorer, conv_in)
    assert {id(p) for p in restorer.trainable_parameters()} == {id(named[n]) for n in trained}
    assert set(restorer.trained_state_dict()) == trained
    assert any(n.startswith('vae.encoder.') for n in trained)
    assert ('unet.conv_in.base_layer.weight' in trained) == conv_in
    assert all(named[n].grad is not None and named[n].grad.abs().sum() > 0 for n in trained)
    for name, parameter in restorer.named_parameters():
        if id(parameter) not in {id(named[n]) for n in trained}:  # base UNet/VAE weights, text tower, decoder
            assert parameter.grad is None and not parameter.requires_grad, name


def test_one_unet_call_with_gradient_and_the_reference_without_it(restorer):
    calls = []
    hook = restorer.sd.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: calls.append((torch.is_grad_enabled(), int(args[1][0]))), with_kwargs=True)
    flags = {n: p.requires_grad for n, p in restorer.named_parameters()}
    out = restorer.restore(_lq(), grad_steps=1, generator=_gen())
    hook.remove()
    assert calls == [(True, 999), (False, 999)]
    assert flags == {n: p.requires_grad for n, p in restorer.named_parameters()}  # peft's toggling undone
    assert len(out.reg_pairs) == 1 and out.reg_pairs[0][0].requires_grad and not out.reg_pairs[0][1].requires_grad
    assert out.info == {'stop_timestep': 999.0, 'grad_calls': 1.0}
    with pytest.raises(ValueError, match='0 or 1'):
        restorer.restore(_lq(), grad_steps=2)


def test_latent_is_the_closed_form_x0_of_the_one_unet_call(restorer):
    seen = []
    hook = restorer.sd.unet.register_forward_hook(
        lambda _m, args, output: seen.append((args[0].detach(), output.sample.detach())) and None)
    out = restorer.restore(_lq(), generator=_gen())
    hook.remove()
    (z, eps), = seen
    alpha = sd_alphas_cumprod()[999].item()
    # recomputed here from a Python-float ᾱ, in the restorer from its own tensor: float32 rounding
    assert torch.allclose(out.latent, (z - (1 - alpha) ** 0.5 * eps) / alpha ** 0.5, atol=1e-5)


def test_no_lora_reference_is_the_unet_with_its_adapters_off():
    restorer = OSEDiffRestorer(tiny=True, reg_reference='no_lora')
    eps, ref = restorer.restore(_lq(), grad_steps=1, generator=_gen()).reg_pairs[0]
    assert not torch.allclose(eps, ref)
    with torch.no_grad():
        for name, parameter in restorer.sd.unet.named_parameters():
            if '.lora_B.' in name:
                parameter.zero_()  # adapters with no effect: the reference must equal the trained call
    eps, ref = restorer.restore(_lq(), grad_steps=1, generator=_gen()).reg_pairs[0]
    # the trained call runs with gradient, the reference under no_grad (other CPU kernels): float32 rounding
    assert torch.allclose(eps, ref, atol=1e-6)


def test_initial_reference_is_zero_at_first_and_keeps_the_initial_weights():
    restorer = OSEDiffRestorer(tiny=True, reg_reference='initial')
    eps, ref = restorer.restore(_lq(), grad_steps=1, generator=_gen()).reg_pairs[0]
    assert float((eps - ref).pow(2).mean()) < 1e-12  # equal up to float rounding (functional_call's own kernels)
    with torch.no_grad():
        restorer.sd.unet.conv_in.base_layer.bias.add_(0.1)
    eps, ref = restorer.restore(_lq(), grad_steps=1, generator=_gen()).reg_pairs[0]
    assert not torch.allclose(eps, ref)
    assert 'initial_unet' not in ''.join(restorer.state_dict())  # θ₀ is never saved


def test_captions_are_the_sd_prompts_and_missing_ones_fall_back(plain):
    def image(captions):
        return plain.restore(_lq(), captions).image
    assert not torch.equal(image(['an old man', 'a young woman']), image(['a smiling child', 'a young woman']))
    assert torch.equal(image(None), image(['a face', '']))
    plain.use_captions = False
    try:
        assert torch.equal(image(['an old man', 'x']), image(None))
    finally:
        plain.use_captions = True
    with pytest.raises(ValueError, match='3 captions for 2 images'):
        image(['a', 'b', 'c'])


def test_vae_posterior_sample_follows_the_generator_and_mode_does_not(restorer, plain):
    a, b = (restorer.restore(_lq(), generator=_gen(1)).latent for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, restorer.restore(_lq(), generator=_gen(2)).latent)
    assert torch.equal(plain.restore(_lq(), generator=_gen(1)).latent, plain.restore(_lq(), generator=_gen(2)).latent)


def _train_a_little(restorer):
    with torch.no_grad():
        for parameter in restorer.trainable_parameters():
            parameter.add_(0.01)


def test_saved_and_reloaded_restorer_gives_identical_outputs(tmp_path):
    first = OSEDiffRestorer(tiny=True)
    _train_a_little(first)
    expected = first.restore(_lq(), generator=_gen(7)).image
    torch.save({'params': first.trained_state_dict()}, tmp_path / 'net_g.pth')  # ReFLModel's checkpoint
    second = OSEDiffRestorer(tiny=True)
    assert not torch.equal(second.restore(_lq(), generator=_gen(7)).image, expected)
    second.load_trained_state_dict(torch.load(tmp_path / 'net_g.pth')['params'])
    assert torch.equal(second.restore(_lq(), generator=_gen(7)).image, expected)
    path = save_lora_safetensors(str(tmp_path / 'lora.safetensors'), first.layout, first.trained_state_dict())
    third = OSEDiffRestorer(tiny=True, osediff_checkpoint=path)
    assert torch.equal(third.restore(_lq(), generator=_gen(7)).image, expected)
    with pytest.raises(KeyError, match='missing'):
        second.load_trained_state_dict({k: v for k, v in first.trained_state_dict().items() if 'vae' not in k})


def test_official_osediff_pkl_loads_completely_and_reproduces_its_model(tmp_path):
    parts = T.randomize_(SDParts(TINY_SD), seed=3)
    sd_path = T.save_tiny_sd_checkpoint(parts, str(tmp_path / 'sd.ckpt'))
    pkl_path = T.save_tiny_osediff_pkl(parts, str(tmp_path / 'osediff.pkl'), seed=4)  # parts now carry the LoRA
    raw = torch.load(pkl_path, weights_only=True)
    assert len(raw['vae_lora_encoder_modules']) > len(set(raw['vae_lora_encoder_modules']))  # official repeats
    loaded = OSEDiffRestorer(tiny=True, seed=9, sd_checkpoint=sd_path, osediff_checkpoint=pkl_path)  # complete
    bare = SDParts(TINY_SD)
    fresh = discover_layout(bare.unet, bare.vae)
    for adapter, modules in loaded.layout.unet_modules.items():
        assert set(modules) == set(fresh.unet_modules[adapter]) and modules
    assert set(loaded.layout.vae_modules) == set(fresh.vae_modules) and 'quant_conv' in fresh.vae_modules
    unet_state, vae_state = loaded.sd.unet.state_dict(), loaded.sd.vae.state_dict()
    assert all(torch.equal(unet_state[k], v) for k, v in raw['state_dict_unet'].items())
    assert all(torch.equal(vae_state[k], v) for k, v in raw['state_dict_vae'].items())
    z, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([999]), torch.randn(1, 77, 32)
    with torch.no_grad():
        assert torch.equal(loaded.sd.unet(z, t, ctx).sample, parts.unet(z, t, ctx).sample)
        image = torch.rand(1, 3, 64, 64) * 2 - 1
        assert torch.equal(loaded.sd.encode_latent(image), parts.vae.encode(image).latent_dist.mode() * 0.18215)
    exported = osediff_checkpoint_dict(loaded.layout, loaded.sd.unet, loaded.sd.vae)
    assert set(exported['state_dict_unet']) == set(raw['state_dict_unet'])
    assert set(exported['state_dict_vae']) == set(raw['state_dict_vae'])


def test_a_file_with_an_unknown_key_or_another_rank_is_refused(tmp_path):
    parts = SDParts(TINY_SD)
    pkl_path = T.save_tiny_osediff_pkl(parts, str(tmp_path / 'osediff.pkl'), rank=2)
    assert read_lora_file(pkl_path)[0].rank_unet == 2
    assert OSEDiffRestorer(tiny=True, osediff_checkpoint=pkl_path).layout.rank_vae == 2
    with pytest.raises(OptionError, match='lora_rank 4'):
        OSEDiffRestorer(tiny=True, osediff_checkpoint=pkl_path, lora_rank=4)
    raw = torch.load(pkl_path, weights_only=True)
    raw['state_dict_unet']['mid_block.attentions.0.proj_in.lora_A.default_typo.weight'] = torch.zeros(2, 32)
    torch.save(raw, tmp_path / 'bad.pkl')
    with pytest.raises(ConversionError, match='unused.*default_typo'):
        OSEDiffRestorer(tiny=True, osediff_checkpoint=str(tmp_path / 'bad.pkl'))


def test_inference_output_is_clamped_and_colour_fixed_at_the_input_size(plain, restorer):
    lq = torch.rand(1, 3, 72, 80)
    out_plain, out_fixed = plain.restore(lq), restorer.restore(lq, generator=_gen())
    assert out_plain.image.shape == (1, 3, 72, 80) and out_plain.latent.shape == (1, 4, 9, 10)  # no padding
    # clamped in [-1, 1], mapped to [0, 1] and back (OSEDiff's order): float rounding only
    torch.testing.assert_close(out_plain.image, plain.sd.decode_latent(out_plain.latent).clamp(-1, 1),
                               rtol=0, atol=1e-6)
    signed = lq * 2 - 1
    assert torch.allclose(out_fixed.image.mean(dim=(-2, -1)), signed.mean(dim=(-2, -1)), atol=0.05)
    assert not out_fixed.image.requires_grad and out_fixed.reg_pairs == []


def test_gradient_checkpointing_keeps_the_gradients(num_threads):
    restorer, grads = OSEDiffRestorer(tiny=True).train(), []
    for enabled in (False, True):
        restorer.set_gradient_checkpointing(enabled)
        assert restorer.sd.unet.down_blocks[0].gradient_checkpointing == enabled
        assert restorer.sd.vae.encoder.gradient_checkpointing == enabled
        restorer.restore(_lq(batch=1), grad_steps=1, generator=_gen()).image.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in restorer.trainable_parameters()]))
        for parameter in restorer.trainable_parameters():
            parameter.grad = None
    # checkpointing recomputes the activations inside backward: float32 rounding over the backward pass, relative
    # to the gradients' own size (TINY_SD_GRAD_RTOL); an element near zero sums terms as large as the largest
    # gradient element, so its last reduction rounds on that scale (atol)
    atol = rounding_tol(TINY_SD_WIDEST, float(grads[0].abs().max()))
    assert torch.allclose(grads[0], grads[1], rtol=TINY_SD_GRAD_RTOL, atol=atol)
    assert OSEDiffRestorer(tiny=True, gradient_checkpointing=True).sd.vae.decoder.gradient_checkpointing


def test_options_are_checked_at_construction(tmp_path):
    with pytest.raises(OptionError, match='accepted keys.*osediff_checkpoint'):
        OSEDiffRestorer(tiny=True, lora_ckpt='x')
    with pytest.raises(OptionError, match='reg_reference'):
        OSEDiffRestorer(tiny=True, reg_reference='frozen')
    with pytest.raises(OptionError, match='sd_checkpoint is required'):
        OSEDiffRestorer()
    (tmp_path / 'v2-1_512-ema-pruned.ckpt').write_bytes(b'')
    with pytest.raises(MissingWeightsError) as error:
        OSEDiffRestorer(sd_checkpoint=str(tmp_path / 'v2-1_512-ema-pruned.ckpt'),
                        osediff_checkpoint=str(tmp_path / 'osediff_face.pkl'))
    assert 'option key osediff_checkpoint' in str(error.value) and '\n' not in str(error.value)


def test_tiny_refl_option_file_logs_every_loss_term_and_updates_the_frm(tmp_path):
    opt = load_option_file('refl_osediff_tiny.yml', tmp_path)
    train = opt['train']
    assert (train['frm_update']['every'], train['reg_opt']['loss_weight'], train['grad_steps']) == (10, 1.0, 1)
    train.update(total_iter=4, frm_update={**train['frm_update'], 'every': 2})  # the schedule, in 4 iterations
    torch.manual_seed(0)
    train_set = build_dataset(opt['datasets']['train'])
    loader = build_dataloader(train_set, opt['datasets']['train'], num_gpu=0, dist=False, sampler=None, seed=0)
    model = build_model(opt)
    assert type(model.net_g).__name__ == 'OSEDiffRestorer'
    frm_before = {k: v.clone() for k, v in model.frm.state_dict().items()}
    lora_before = {k: v.clone() for k, v in model.net_g.trained_state_dict().items()}
    logs, it = [], 0
    while it < opt['train']['total_iter']:
        for data in loader:
            it += 1
            model.feed_data(data)
            model.optimize_parameters(it)
            logs.append(dict(model.get_current_log()))
            if it == opt['train']['total_iter']:
                break
    assert all({'l_reg', 'l_dwt', 'l_reward', 'l_lpips', 'l_total'} <= set(log) for log in logs)
    # reference = the initial weights θ₀ (the option file's choice): L_reg ≈ 0 at the first step, > 0 once trained
    assert logs[0]['l_reg'] < 1e-8
    assert all(log['l_reg'] > 0 for log in logs[1:])
    assert [('frm_updates' in log) for log in logs] == [False, True, False, True]
    assert model.frm_update.updates == 2
    assert any(not torch.equal(v, frm_before[k]) for k, v in model.frm.state_dict().items())
    assert all(not torch.equal(v, lora_before[k]) for k, v in model.net_g.trained_state_dict().items()
               if '.lora_B.' in k)
    model.save(0, it)
    layout, unet, vae = read_lora_file(f"{opt['path']['models']}/net_g_{it}.safetensors")  # a LoRA file itself
    assert layout == model.net_g.layout
    assert {f'unet.{k}' for k in unet} | {f'vae.{k}' for k in vae} == set(model.net_g.trained_state_dict())


def test_osediff_test_option_file_builds_both_rows_with_tiny_models(tmp_path):
    """options/test_celeba_osediff.yml: every network key is accepted (tiny models in place of the weight files)."""
    import yaml
    from option_files import ROOT
    with open(os.path.join(ROOT, 'options', 'test_celeba_osediff.yml')) as f:
        opt = yaml.safe_load(f)
    net = dict(opt['network_g'], sd_checkpoint=None, osediff_checkpoint=None, tiny=True)
    restorer = build_network(net)
    out = restorer(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert opt['compare']['pretrain_network_g'].endswith('refl_osediff/models/net_g_latest.safetensors')
