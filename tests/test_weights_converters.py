"""Checkpoint converters (drward.weights): tiny files in the official key layouts convert back exactly.

Each test writes a tiny model in a release's layout (LDM single file, diffusers folder, DiffBIR ControlNet,
DiffBIR face SwinIR), loads it into a freshly (differently) initialised model, and checks that every key was
consumed, none is left over or missing, and that the outputs equal the source model's.
"""
import pytest
import tiny_weights as T
import torch

from drward.archs.face_swinir import FaceSwinIR
from drward.archs.ircontrolnet import IRControlNet, init_from_unet, ircontrolnet_config, scale_residuals
from drward.archs.sd_parts import SD21_BASE, SDParts
from drward.archs.tiny_configs import TINY_FACE_SWINIR, TINY_SD
from drward.weights import ConversionError, load_state_dict_file
from drward.weights.diffbir import load_diffbir_controlnet, load_face_swinir
from drward.weights.sd import load_sd_weights

pytestmark = pytest.mark.usefixtures('one_thread')


def _tiny_parts(seed: int) -> SDParts:
    torch.manual_seed(seed)
    return T.randomize_(SDParts(TINY_SD), seed=seed)


def _tiny_controlnet(parts: SDParts, seed: int) -> IRControlNet:
    torch.manual_seed(seed)
    return T.randomize_(IRControlNet(**ircontrolnet_config(parts.unet.config)), seed=seed)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert set(state_a) == set(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


@torch.no_grad()
def _sd_outputs(parts: SDParts):
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(2, 4, 8, 8, generator=generator)
    image = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    context = parts.text_encoder.encode(['', 'a smiling face'])
    eps = parts.unet(z, torch.tensor([981, 1]), encoder_hidden_states=context).sample
    return context, eps, parts.encode_latent(image), parts.decode_latent(z)


def test_sd_ldm_single_file_round_trips_every_key(tmp_path):
    source = _tiny_parts(seed=1)
    path = T.save_tiny_sd_checkpoint(source, str(tmp_path / 'v2-1_512-ema-pruned.ckpt'))
    target = SDParts(TINY_SD).eval()
    report = load_sd_weights(target, path)
    assert report.complete, report.summary()
    assert len(report.consumed) == len(source.state_dict())
    text_ignored = [k for k in report.ignored if k.startswith('cond_stage_model.')]
    assert 'cond_stage_model.model.logit_scale' in text_ignored
    assert any('resblocks.2.' in k for k in text_ignored)  # the last block: unused at the penultimate layer
    assert 'alphas_cumprod' in report.ignored
    _assert_same_state(source, target)
    for ours, theirs in zip(_sd_outputs(target), _sd_outputs(source)):
        assert torch.equal(ours, theirs)


def test_ldm_file_uses_stable_diffusion_key_names():
    state = T.sd_ldm_state_dict(_tiny_parts(seed=0))
    for key in ('model.diffusion_model.input_blocks.0.0.weight', 'model.diffusion_model.time_embed.2.bias',
                'model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight',
                'model.diffusion_model.input_blocks.3.0.op.weight', 'model.diffusion_model.middle_block.2.'
                'out_layers.3.weight', 'model.diffusion_model.output_blocks.2.1.conv.weight',
                'model.diffusion_model.output_blocks.5.2.conv.weight', 'model.diffusion_model.out.2.weight',
                'first_stage_model.decoder.up.3.upsample.conv.weight', 'first_stage_model.encoder.mid.attn_1.q.weight',
                'cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight'):
        assert key in state, key
    assert state['first_stage_model.encoder.mid.attn_1.q.weight'].ndim == 4  # a 1×1 conv in LDM


def test_unknown_and_missing_keys_are_reported(tmp_path):
    state = T.sd_ldm_state_dict(_tiny_parts(seed=0))
    del state['model.diffusion_model.out.2.weight']
    state['model.diffusion_model.extra_head.weight'] = torch.zeros(3)
    path = tmp_path / 'broken.ckpt'
    torch.save({'state_dict': state}, path)
    report = load_sd_weights(SDParts(TINY_SD), str(path))
    assert report.unconsumed == ['model.diffusion_model.extra_head.weight']
    assert report.missing == ['conv_out.weight']
    with pytest.raises(ConversionError, match='conv_out.weight'):
        report.raise_if_incomplete()


def test_sd_diffusers_folder_round_trips_and_matches_transformers_text_encoder(tmp_path):
    from transformers import CLIPTextModel
    source = _tiny_parts(seed=2)
    folder = T.save_tiny_diffusers_folder(source, str(tmp_path / 'sd21'))
    target = SDParts(TINY_SD).eval()
    report = load_sd_weights(target, folder)
    assert report.complete, report.summary()
    _assert_same_state(source, target)
    for ours, theirs in zip(_sd_outputs(target), _sd_outputs(source)):
        # bit-equal weights (checked above) in two separately built modules, which may pick other attention
        # kernels: float32 rounding
        assert torch.allclose(ours, theirs, atol=1e-6)
    # diffusers' SD 2.x text encoder (L − 1 layers + final norm) is our penultimate-layer context
    hf = CLIPTextModel.from_pretrained(f'{folder}/text_encoder').eval()
    tokens = source.text_encoder.tokenize(['', 'an old man'])
    with torch.no_grad():
        # transformers' CLIP text model and open_clip's: two implementations of the same maths, float32 rounding
        assert torch.allclose(hf(tokens).last_hidden_state, source.text_encoder(tokens), atol=1e-5)


def test_diffbir_controlnet_file_round_trips(tmp_path):
    parts = _tiny_parts(seed=0)
    source = _tiny_controlnet(parts, seed=4)
    path = T.save_tiny_diffbir_controlnet(source, str(tmp_path / 'v1_face.pth'))
    official = torch.load(path)
    assert official['input_blocks.0.0.weight'].shape[1] == 8  # cat(z_t, c)
    assert {k.split('.')[1] for k in official if k.startswith('zero_convs.')} == {str(i) for i in range(12)}
    assert 'middle_block_out.0.weight' in official and not any('hint' in k for k in official)
    target = IRControlNet(**ircontrolnet_config(parts.unet.config)).eval()
    report = load_diffbir_controlnet(target, path)
    assert report.complete and len(report.consumed) == len(official), report.summary()
    _assert_same_state(source, target)
    z, c = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    context = parts.prompt_context('', 2, z.device, z.dtype)
    with torch.no_grad():
        for ours, theirs in zip(target(z, c, torch.tensor([21, 1]), context),
                                source(z, c, torch.tensor([21, 1]), context)):
            assert torch.equal(ours, theirs)


def test_controlnet_file_with_a_hint_encoder_is_refused():
    parts = _tiny_parts(seed=0)
    state = T.ircontrolnet_to_diffbir(_tiny_controlnet(parts, 0).state_dict(), 2)
    state['input_hint_block.0.weight'] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(ConversionError, match='hint'):
        load_diffbir_controlnet(IRControlNet(**ircontrolnet_config(parts.unet.config)), state)


def test_face_swinir_file_round_trips(tmp_path):
    torch.manual_seed(5)
    source = T.randomize_(FaceSwinIR(**TINY_FACE_SWINIR), seed=5)
    path = T.save_tiny_face_swinir(source, str(tmp_path / 'face_swinir_v1.ckpt'))
    official = torch.load(path)['state_dict']
    assert official['conv_first.1.weight'].shape[1] == 3 * 64 and 'conv_up3.weight' in official
    target = FaceSwinIR(**TINY_FACE_SWINIR).eval()
    report = load_face_swinir(target, path)
    assert report.complete and len(report.consumed) == len(official), report.summary()
    lq = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target(lq), source(lq))


def test_irc_initialised_from_unet_zero_pads_condition_and_adds_nothing():
    parts = _tiny_parts(seed=0)
    controlnet = IRControlNet(**ircontrolnet_config(parts.unet.config)).eval()  # zero convs are zero
    padded, kept = init_from_unet(controlnet, parts.unet)
    assert padded == {'conv_in.weight'}
    assert all(k.startswith('controlnet_') for k in kept)
    weight = controlnet.conv_in.weight
    assert torch.equal(weight[:, :4], parts.unet.conv_in.weight) and not weight[:, 4:].any()
    z, t = torch.randn(1, 4, 8, 8), torch.tensor([501])
    context = parts.prompt_context('', 1, z.device, z.dtype)
    with torch.no_grad():
        residuals = controlnet(z, torch.randn(1, 4, 8, 8), t, context)
        down, mid = scale_residuals(residuals, [1.0] * 13)
        controlled = parts.unet(z, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                                mid_block_additional_residual=mid).sample
        plain = parts.unet(z, t, encoder_hidden_states=context).sample
    # exact: zero convolutions give exactly 0 residuals, and x + 0 == x in IEEE arithmetic; the rest is the same
    # kernels on the same inputs
    assert len(residuals) == 13 and torch.equal(controlled, plain)


def test_sd21_config_is_the_diffusers_sd21_base_architecture():
    unet = SD21_BASE.unet_diffusers_config()
    assert unet['block_out_channels'] == [320, 640, 1280, 1280]
    assert unet['attention_head_dim'] == [5, 10, 20, 20] and unet['use_linear_projection']
    assert unet['cross_attention_dim'] == 1024 and unet['layers_per_block'] == 2
    assert SD21_BASE.vae_diffusers_config()['block_out_channels'] == [128, 256, 512, 512]
    assert ircontrolnet_config(unet)['in_channels'] == 8


def test_state_dict_file_unwrapping(tmp_path):
    tensor = torch.arange(3.0)
    torch.save({'state_dict': {'module.a': tensor, 'module.b': tensor + 1}, 'global_step': 7}, tmp_path / 'x.ckpt')
    loaded = load_state_dict_file(str(tmp_path / 'x.ckpt'))
    assert set(loaded) == {'a', 'b'} and torch.equal(loaded['b'], tensor + 1)


class _TrainingObject:  # stands for Lightning's callbacks / hyper-parameters in an official .ckpt
    built = False

    def __setstate__(self, state):
        _TrainingObject.built = True  # the real class would run here; the loader must not call it


def test_file_with_pickled_objects_yields_its_tensors_only(tmp_path):
    extra = _TrainingObject()
    extra.monitor = 'val/loss'
    torch.save({'state_dict': {'a': torch.zeros(1)}, 'callbacks': extra}, tmp_path / 'odd.pth')
    with pytest.warns(UserWarning, match='inert placeholders'):
        loaded = load_state_dict_file(str(tmp_path / 'odd.pth'))
    assert set(loaded) == {'a'} and not _TrainingObject.built
