"""LoRA on DiffBIR's IRControlNet (network_g.lora): the option, the adapters, LoRA-only checkpoints that any loader
recognises, the merged full checkpoint, and a tiny ReFL run that trains, resumes bit for bit, and is evaluated by
tools/test.py and restored by tools/restore.py from its LoRA-only checkpoint."""
import os
import shutil
import subprocess
import sys

import cv2
import pytest
import torch
from option_files import ROOT, read_option_file, run_tools_train, write_options
from safetensors import safe_open
from safetensors.torch import load_file

from drward.archs.controlnet_lora import DEFAULT_TARGETS, METADATA_KEY, parse_lora_option, read_lora_metadata
from drward.archs.diffbir_arch import DiffBIRRestorer
from drward.archs.restorer import load_restorer_weights, restore_seeded, save_trained_part
from drward.data.demo_faces import ensure_demo_faces
from drward.utils.options import OptionError

TINY = dict(tiny=True, num_steps=3)
LQ = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def _train_a_little(net: DiffBIRRestorer, steps: int = 2) -> None:
    """A few SGD steps on a made-up loss, so the adapters differ from their initial B = 0."""
    optimizer = torch.optim.SGD(list(net.trainable_parameters()), lr=1.0)
    for seed in range(steps):
        out = net.restore(LQ, grad_steps=1, generator=torch.Generator().manual_seed(seed))
        optimizer.zero_grad()
        (out.image - 1).square().mean().backward()
        optimizer.step()


def test_lora_option_needs_a_rank_defaults_alpha_to_it_and_names_unknown_keys():
    lora = parse_lora_option({'rank': 8})
    assert (lora.rank, lora.alpha, lora.dropout, tuple(lora.target_modules)) == (8, 8.0, 0.0, DEFAULT_TARGETS)
    assert parse_lora_option(None) is None
    for bad, words in (({'alpha': 4}, 'lora.rank is required'), ({'rank': 0}, 'lora.rank is required'),
                       ({'rank': 4, 'rnak': 1}, 'lora.rnak: unknown key'), ({'rank': 4, 'dropout': 1.5}, 'dropout'),
                       ({'rank': 4, 'target_modules': []}, 'target_modules')):
        with pytest.raises(OptionError, match=words):
            parse_lora_option(bad)
    with pytest.raises(OptionError, match='match no weight'):
        DiffBIRRestorer(**TINY, lora={'rank': 2, 'target_modules': ['no_such_layer']})


def test_fresh_adapters_leave_the_restorer_as_loaded_and_only_they_train():
    """B = 0 at creation: the LoRA restorer restores what the plain one does (different layers compute it: a
    tolerance), θ₀ is the same network (L_reg pairs equal), and only the factors are trainable and saved."""
    plain, lora = DiffBIRRestorer(**TINY), DiffBIRRestorer(**TINY, lora={'rank': 4})
    diff = float((restore_seeded(plain, LQ, None, 0) - restore_seeded(lora, LQ, None, 0)).abs().max())
    assert diff < 1e-5
    out = lora.restore(LQ, grad_steps=1, generator=torch.Generator().manual_seed(0))
    assert len(out.reg_pairs) == 13 and all(torch.equal(a, b) for a, b in out.reg_pairs)
    names = [n for n, p in lora.controlnet.named_parameters() if p.requires_grad]
    assert names and all('.lora_A.' in n or '.lora_B.' in n for n in names)
    assert set(lora.trained_state_dict()) == set(names)
    assert lora.controlnet_ref is None  # θ₀ = the IRControlNet with its adapters disabled
    trained = sum(p.numel() for p in lora.trainable_parameters())
    assert trained < 0.2 * sum(p.numel() for p in plain.trainable_parameters())


@pytest.mark.heavy
def test_a_lora_only_file_loads_into_a_restorer_built_without_lora_and_merges_to_a_full_checkpoint(tmp_path):
    """The file holds the factors and names the adapters and their base; a plain restorer adds them on load
    (round trip: exact); tools/convert_weights.py --merge-lora writes a full IRControlNet that a plain restorer
    loads and that restores what the adapters do (merged weights: a tolerance)."""
    trained = DiffBIRRestorer(**TINY, lora={'rank': 4, 'alpha': 8})
    _train_a_little(trained)
    path = str(tmp_path / 'net_g_2.safetensors')
    save_trained_part(trained, path)
    with safe_open(path, framework='pt') as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert keys and all('.lora_' in k for k in keys)
    found = read_lora_metadata(metadata)
    assert (found.rank, found.alpha) == (4, 8.0) and found.modules == trained.lora.modules
    assert found.base.startswith('tiny random')
    expected = restore_seeded(trained, LQ, None, 1)
    loaded = DiffBIRRestorer(**TINY)
    load_restorer_weights(loaded, path)
    assert loaded.lora is not None and torch.equal(restore_seeded(loaded, LQ, None, 1), expected)
    with pytest.raises(OptionError, match='differs from network_g.lora'):
        load_restorer_weights(DiffBIRRestorer(**TINY, lora={'rank': 2}), path)

    opt_path = write_options({'network_g': {'type': 'DiffBIRRestorer', **TINY}}, tmp_path / 'net.yml')
    merged = str(tmp_path / 'merged.safetensors')
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'convert_weights.py'), path, merged,
                             '--merge-lora', '--opt', opt_path], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    with safe_open(merged, framework='pt') as handle:
        assert METADATA_KEY not in (handle.metadata() or {})
        assert not any('lora' in k or 'base_layer' in k for k in handle.keys())
    full = DiffBIRRestorer(**TINY)
    load_restorer_weights(full, merged)
    assert full.lora is None
    assert float((restore_seeded(full, LQ, None, 1) - expected).abs().max()) < 1e-4


# ------------------------------------------------------------------------------------------------ a tiny run
TOTAL, EVERY = 4, 2


def _run_options(tmp_path, name: str) -> dict:
    opt = read_option_file('ablations/refl_diffbir_lora_tiny.yml')
    opt['name'] = name
    opt['network_g']['num_steps'] = 4
    opt['train'].update(total_iter=TOTAL, grad_accum=2, ema_decay=0.9)  # with an EMA of the factors
    opt['train']['frm_update']['every'] = EVERY
    opt['logger'].update(save_checkpoint_freq=EVERY, print_freq=1)
    opt.pop('val')
    opt['datasets'].pop('val')
    opt['datasets']['train'].update(dataroot_gt=str(tmp_path / 'faces'), batch_size_per_gpu=2)
    return opt


@pytest.mark.heavy
def test_a_tiny_lora_run_trains_resumes_bit_identically_and_its_checkpoint_is_tested_and_restored(tmp_path):
    """Also with train.ema_decay: the EMA resumes bit for bit and tools/test.py evaluates it (params_ema)."""
    names = [f'pytest_lora_{tag}_{os.getpid()}' for tag in ('whole', 'resumed')]
    exps = [os.path.join(ROOT, 'experiments', name) for name in names]
    try:
        ensure_demo_faces(str(tmp_path / 'faces'), size=64)
        whole = write_options(_run_options(tmp_path, names[0]), tmp_path / 'whole.yml')
        result = run_tools_train(whole)
        assert result.returncode == 0, result.stderr[-3000:]
        final = os.path.join(exps[0], 'models', f'net_g_{TOTAL}.safetensors')
        weights = load_file(final)
        assert weights and all('.lora_' in k for k in weights)
        assert any(float(v.abs().max()) > 0 for k, v in weights.items() if '.lora_B.' in k)  # it trained

        # the resumed run: the first run's files up to iteration EVERY, then --auto_resume
        shutil.copytree(exps[0], exps[1])
        for folder, suffixes in (('models', (f'_{TOTAL}.safetensors', f'_{TOTAL}.pth')),
                                 ('training_states', (f'{TOTAL}.state',))):
            for name in os.listdir(os.path.join(exps[1], folder)):
                if name.endswith(suffixes):
                    os.remove(os.path.join(exps[1], folder, name))
        result = run_tools_train(write_options(_run_options(tmp_path, names[1]), tmp_path / 'resumed.yml'),
                                 '--auto_resume')
        assert result.returncode == 0, result.stderr[-3000:]
        assert f'iter: {EVERY}' in result.stdout + result.stderr
        for label in ('g', 'g_ema'):  # the factors and their EMA, bit for bit
            expected = load_file(os.path.join(exps[0], 'models', f'net_{label}_{TOTAL}.safetensors'))
            resumed = load_file(os.path.join(exps[1], 'models', f'net_{label}_{TOTAL}.safetensors'))
            assert resumed.keys() == weights.keys() == expected.keys()
            assert all(torch.equal(resumed[k], expected[k]) for k in weights), label

        test_opt = read_option_file('test_celeba_tiny.yml')
        test_opt['name'] = f'pytest_lora_test_{os.getpid()}'
        test_opt['network_g']['num_steps'] = 4
        test_opt['datasets'] = {'test_1': {**test_opt['datasets']['test_1'], 'dataroot_gt': str(tmp_path / 'faces'),
                                           'gt_size': 64}}
        test_opt['path'].update(pretrain_network_g=final, param_key_g='params_ema')  # BasicSR's EMA key
        test_opt['val'].update(metrics={'psnr': test_opt['val']['metrics']['psnr']}, save_img=False, pbar=False)
        test_path = write_options(test_opt, tmp_path / 'test.yml')
        env = {**os.environ, 'OMP_NUM_THREADS': '1'}
        result = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'test.py'), '-opt', test_path],
                                capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        log = result.stdout + result.stderr
        assert 'the checkpoint holds LoRA adapters' in log and 'psnr' in log and '[params_ema]' in log
        shutil.rmtree(os.path.join(ROOT, 'results', test_opt['name']), ignore_errors=True)

        face = tmp_path / 'aligned' / 'face.png'
        face.parent.mkdir()
        shutil.copy(sorted((tmp_path / 'faces').glob('*.png'))[0], face)
        out = tmp_path / 'restored'
        result = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'restore.py'), '-i', str(face.parent),
                                 '-o', str(out), '--tiny', '--aligned', '--face-size', '64', '--steps', '4',
                                 '--checkpoint', final, '--no-progress'],
                                capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert cv2.imread(str(out / 'restored_faces' / 'face_00.png')) is not None
    finally:
        for name, exp in zip(names, exps):
            shutil.rmtree(exp, ignore_errors=True)
            shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)
