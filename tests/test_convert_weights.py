"""Official layouts that carry training objects still load; tools/convert_weights.py writes what the loaders read."""
import importlib.util
import os

import pytest
import tiny_weights as T
import torch
from option_files import ROOT

from drward.archs.face_swinir import FaceSwinIR
from drward.archs.frm_arch import FaceRewardModel
from drward.archs.sd_parts import SDParts
from drward.archs.tiny_configs import TINY_FACE_SWINIR, TINY_SD
from drward.weights.diffbir import load_face_swinir
from drward.weights.osediff import read_lora_file

_spec = importlib.util.spec_from_file_location('convert_weights', os.path.join(ROOT, 'tools', 'convert_weights.py'))
convert_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_weights)

pytestmark = pytest.mark.usefixtures('one_thread')


class ModelCheckpoint:  # stands for Lightning's callback objects in an official .ckpt; never rebuilt by the loader
    rebuilt = False

    def __setstate__(self, state):
        ModelCheckpoint.rebuilt = True


def _lightning_face_swinir(tmp_path):
    """A tiny face SwinIR saved the way a Lightning ``.ckpt`` is: weights plus training objects."""
    source = T.randomize_(FaceSwinIR(**TINY_FACE_SWINIR), seed=5)
    path = T.save_tiny_face_swinir(source, str(tmp_path / 'face_swinir_v1.ckpt'))
    checkpoint = torch.load(path, weights_only=True)
    callback = ModelCheckpoint()
    callback.best_model_score = torch.tensor(0.5)
    checkpoint.update({'epoch': 3, 'global_step': 1200, 'pytorch-lightning_version': '1.4.2',
                       'callbacks': {ModelCheckpoint: callback}, 'hyper_parameters': {'lr': 1e-4},
                       'optimizer_states': [{'state': {0: {'exp_avg': torch.zeros(2)}}}]})
    torch.save(checkpoint, path)
    return source, path


def _same_outputs(model_a, model_b):
    lq = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        return torch.equal(model_a(lq), model_b(lq))


def test_lightning_style_checkpoint_loads_its_weights_and_converts(tmp_path, capsys):
    source, path = _lightning_face_swinir(tmp_path)
    target = FaceSwinIR(**TINY_FACE_SWINIR).eval()
    with pytest.warns(UserWarning, match='ModelCheckpoint'):
        assert load_face_swinir(target, path).complete
    assert _same_outputs(target, source.eval()) and not ModelCheckpoint.rebuilt
    out = str(tmp_path / 'face_swinir_v1.safetensors')
    assert convert_weights.main([path, out]) == 0
    printed = capsys.readouterr().out
    for dropped in ('global_step (int)', 'hyper_parameters.lr (float)', 'optimizer_states.0.state.0.exp_avg (Tensor'):
        assert dropped in printed, printed
    converted = FaceSwinIR(**TINY_FACE_SWINIR).eval()
    assert load_face_swinir(converted, out).complete and _same_outputs(converted, source)


def test_osediff_pkl_converts_to_a_lora_file_with_its_layout(tmp_path, capsys):
    pkl = T.save_tiny_osediff_pkl(SDParts(TINY_SD), str(tmp_path / 'osediff.pkl'), seed=4)
    out = str(tmp_path / 'osediff.safetensors')
    assert convert_weights.main([pkl, out]) == 0
    assert '0 entries dropped' in capsys.readouterr().out
    (layout_a, unet_a, vae_a), (layout_b, unet_b, vae_b) = read_lora_file(pkl), read_lora_file(out)
    assert layout_a == layout_b and unet_a.keys() == unet_b.keys() and vae_a.keys() == vae_b.keys()
    assert all(torch.equal(unet_a[k], unet_b[k]) for k in unet_a)
    assert all(torch.equal(vae_a[k], vae_b[k]) for k in vae_a)


def test_hps_layout_converts_and_the_frm_reads_it(tmp_path):
    frm = FaceRewardModel(model_name='tiny')
    path = str(tmp_path / 'HPS_v2_compressed.pt')
    torch.save({'state_dict': frm.clip.state_dict()}, path)
    out = str(tmp_path / 'HPS_v2_compressed.safetensors')
    assert convert_weights.main([path, out]) == 0
    loaded = FaceRewardModel(model_name='tiny', checkpoint=out)
    assert all(torch.equal(v, loaded.clip.state_dict()[k]) for k, v in frm.clip.state_dict().items())


def test_unreadable_input_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / 'v1_face.pth').write_bytes(b'garbage')
    assert convert_weights.main([str(tmp_path / 'v1_face.pth'), str(tmp_path / 'out.safetensors')]) == 1
    assert convert_weights.main([str(tmp_path / 'absent.pth'), str(tmp_path / 'out.safetensors')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and 'v1_face.pth' in err[0] and 'absent.pth' in err[1]
