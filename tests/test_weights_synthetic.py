"""The official-layout weight writer (drward.weights.synthetic), at tiny size: every file loads through drward's
own loaders with every key used, the output is deterministic in the seed, and a rerun reuses what is there.
Real-size runs are not tests (minutes, ~5 GiB): `python -m drward.weights.synthetic DIR`."""
import os

import pytest
import torch

from drward.archs.face_swinir import FaceSwinIR
from drward.archs.frm_arch import FaceRewardModel
from drward.archs.ircontrolnet import IRControlNet, ircontrolnet_config
from drward.archs.lora import add_lora
from drward.archs.sd_parts import SDParts
from drward.archs.tiny_configs import TINY_FACE_SWINIR, TINY_SD
from drward.diffusion.schedule import sd_alphas_cumprod
from drward.weights import load_state_dict_file
from drward.weights.diffbir import load_diffbir_controlnet, load_face_swinir
from drward.weights.osediff import load_osediff_lora, read_lora_file
from drward.weights.sd import load_sd_weights
from drward.weights.synthetic import FILES, write_real_size_weights

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def tiny_files(tmp_path_factory):
    return write_real_size_weights(str(tmp_path_factory.mktemp('weights')), seed=0, tiny=True)


def test_tiny_run_writes_every_file_but_vgg16_under_its_official_name(tiny_files):
    assert set(tiny_files) == set(FILES) - {'vgg16'}
    assert all(os.path.basename(path) == FILES[name] for name, path in tiny_files.items())


def test_every_file_loads_through_the_loaders_with_every_key_used(tiny_files):
    parts = SDParts(TINY_SD)
    assert load_sd_weights(parts, tiny_files['sd']).complete
    controlnet = IRControlNet(**ircontrolnet_config(parts.unet.config))
    assert load_diffbir_controlnet(controlnet, tiny_files['diffbir']).complete
    assert load_face_swinir(FaceSwinIR(**TINY_FACE_SWINIR), tiny_files['swinir']).complete
    layout, unet_state, vae_state = read_lora_file(tiny_files['osediff'])
    assert (layout.rank_unet, layout.rank_vae) == (4, 4)
    add_lora(parts.unet, parts.vae, layout)
    assert load_osediff_lora(parts.unet, parts.vae, unet_state, vae_state).complete
    FaceRewardModel(model_name='tiny', checkpoint=tiny_files['frm'])  # strict: raises on any key mismatch


def test_sd_file_holds_the_ldm_schedule_buffers(tiny_files):
    state = load_state_dict_file(tiny_files['sd'])
    # float32 storage of the float64 schedule: equal to float32 rounding
    torch.testing.assert_close(state['alphas_cumprod'], sd_alphas_cumprod().float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(state['sqrt_one_minus_alphas_cumprod'] ** 2, 1 - state['alphas_cumprod'])


def test_files_are_deterministic_in_the_seed(tiny_files, tmp_path):
    again = write_real_size_weights(str(tmp_path / 'same'), seed=0, which=['diffbir'], tiny=True)
    other = write_real_size_weights(str(tmp_path / 'other'), seed=1, which=['diffbir'], tiny=True)
    first, second, third = (torch.load(p['diffbir'] if isinstance(p, dict) else p, weights_only=True)
                            for p in (tiny_files, again, other))
    assert all(torch.equal(first[k], second[k]) for k in first)  # same seed, same kernels: bit-identical
    assert not torch.equal(first['time_embed.0.weight'], third['time_embed.0.weight'])


def test_rerun_reuses_complete_files_and_rewrites_a_truncated_one(tmp_path):
    lines = []
    path = write_real_size_weights(str(tmp_path), which=['swinir'], tiny=True)['swinir']
    stamp = os.stat(path).st_mtime_ns
    write_real_size_weights(str(tmp_path), which=['swinir'], tiny=True, log=lines.append)
    assert os.stat(path).st_mtime_ns == stamp and lines[-1].endswith('reused')
    with open(path, 'r+b') as handle:
        handle.truncate(os.path.getsize(path) // 2)
    write_real_size_weights(str(tmp_path), which=['swinir'], tiny=True, log=lines.append)
    assert lines[-1].endswith('written')
    assert load_face_swinir(FaceSwinIR(**TINY_FACE_SWINIR), path).complete


def test_unknown_names_and_tiny_vgg16_are_refused(tmp_path):
    with pytest.raises(ValueError, match='unknown names'):
        write_real_size_weights(str(tmp_path), which=['sdxl'])
    with pytest.raises(ValueError, match='real size only'):
        write_real_size_weights(str(tmp_path), which=['vgg16'], tiny=True)
