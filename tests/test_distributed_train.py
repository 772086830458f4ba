"""``torchrun --nproc_per_node 2 tools/train.py -opt options/refl_diffbir_tiny.yml --launcher pytorch`` on the CPU
(gloo), as the README shows it, cut short with ``--force_yml``: it runs to the end, its training states hold both
ranks' random streams, and a run cut back to its first checkpoint and resumed with ``--auto_resume`` on two
processes ends with the uninterrupted run's weights and FRM, bit for bit (same machine, same thread count: the same
kernels run on the same inputs; a two-rank all-reduce adds two numbers, which commutes exactly)."""
import glob
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file

from drward.data.demo_faces import ensure_demo_faces
from drward.utils.safe_load import load_training_state
from option_files import ROOT

TOTAL, EVERY = 6, 3


def torchrun_train(name: str, tmp_path, *extra) -> subprocess.CompletedProcess:
    """The README's line with the demo cut short: 6 iterations, K = 4, 2 faces per rank in 2 micro-batches, the FRM
    updated at 2, 4 and 6, checkpoints at 3 and 6, validation at the end only, on 2 faces."""
    overrides = [f'name={name}', f'train:total_iter={TOTAL}', 'network_g:num_steps=4', 'train:grad_accum=2',
                 'train:frm_update:every=2', f'logger:save_checkpoint_freq={EVERY}', 'logger:print_freq=1',
                 'val:val_freq=100', 'datasets:train:batch_size_per_gpu=2',
                 f'datasets:train:dataroot_gt={tmp_path / "faces"}', f'datasets:val:dataroot_gt={tmp_path / "val"}']
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               os.path.join(ROOT, 'tools', 'train.py'), '-opt', os.path.join(ROOT, 'options', 'refl_diffbir_tiny.yml'),
               '--launcher', 'pytorch', *extra, '--force_yml', *overrides]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def final_weights(exp: str):
    g = load_file(os.path.join(exp, 'models', f'net_g_{TOTAL}.safetensors'))
    frm = torch.load(os.path.join(exp, 'models', f'net_frm_{TOTAL}.pth'), weights_only=True)['state_dict']
    return {**{f'g.{k}': v for k, v in g.items()}, **{f'frm.{k}': v for k, v in frm.items()}}


def test_two_process_tiny_run_ends_and_resumes_with_auto_resume_to_the_same_weights(tmp_path):
    name = f'pytest_torchrun_{os.getpid()}'
    exp = os.path.join(ROOT, 'experiments', name)
    ensure_demo_faces(str(tmp_path / 'faces'), size=64)
    ensure_demo_faces(str(tmp_path / 'val'), size=64, count=2)
    try:
        whole = torchrun_train(name, tmp_path)
        log = whole.stdout + whole.stderr
        assert whole.returncode == 0, log[-4000:]
        assert 'World size (gpu number): 2' in log and 'End of training' in log
        assert 'Validation demo_faces_tiny_val' in log  # rank 0 validated at the end
        state = load_training_state(os.path.join(exp, 'training_states', f'{EVERY}.state'))
        assert sorted(state['random']) == [0, 1]
        expected = final_weights(exp)

        for path in glob.glob(os.path.join(exp, 'models', f'*_{TOTAL}.*')) + glob.glob(
                os.path.join(exp, 'training_states', f'{TOTAL}.state')):
            os.remove(path)  # back to the first checkpoint, as if killed after it
        resumed = torchrun_train(name, tmp_path, '--auto_resume')
        log = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, log[-4000:]
        assert f'Resuming training from epoch: 0, iter: {EVERY}.' in log  # 4 iterations per epoch: 16 faces / (2 × 2)
        assert 'continues after its first 3 batches' in log
        got = final_weights(exp)
        assert got.keys() == expected.keys()
        diff = max(float((got[k].float() - expected[k].float()).abs().max()) for k in expected)
        assert diff == 0.0, f'max abs difference {diff} after resuming on two processes'
    finally:
        shutil.rmtree(exp, ignore_errors=True)
        shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)
