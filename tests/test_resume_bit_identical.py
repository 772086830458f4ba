"""A tiny ReFL run killed with SIGKILL after its first checkpoint, or preempted there with SIGTERM (it saves the
iteration in progress and exits), and resumed with --auto_resume ends with the same weights and FRM as an
uninterrupted run, bit for bit (same machine, same thread count: the same kernels run on the
same inputs, so exact equality is the right test). A corrupt face among the training faces is skipped on the way.
Both runs use the batched no-grad prefix (train.batched_prefix), the real option files' default."""
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from option_files import ROOT, run_tools_train
from torchrun_helpers import wait_for

from drward.data.demo_faces import ensure_demo_faces
from drward.utils.preemption import EXIT_PREEMPTED

pytestmark = pytest.mark.heavy  # whole training runs: scheduled first (tests/conftest.py)

TOTAL, EVERY = 8, 2  # 16 demo faces + 1 corrupt in batches of 3: 5 batches per epoch; states 2, 4 fall mid-epoch


def _tiny_options(tmp_path, name: str) -> str:
    with open(os.path.join(ROOT, 'options', 'refl_diffbir_tiny.yml')) as f:
        opt = yaml.safe_load(f)
    opt['name'] = name
    opt['network_g']['num_steps'] = 4
    opt['train'].update(total_iter=TOTAL, grad_accum=3, batched_prefix=True)  # resume with the batched prefix on
    opt['train']['frm_update']['every'] = 3  # FRM updates at 3 and 6: before and after the first checkpoint
    opt['logger'].update(save_checkpoint_freq=EVERY, print_freq=1)
    opt.pop('val')
    opt['datasets'].pop('val')
    opt['datasets']['train'].update(dataroot_gt=str(tmp_path / 'faces'), batch_size_per_gpu=3)
    path = tmp_path / f'{name}.yml'
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def _start(opt_path: str, log_path) -> subprocess.Popen:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    with open(log_path, 'w') as log:  # a file, not a pipe: nobody reads a pipe while the run goes on
        return subprocess.Popen([sys.executable, os.path.join(ROOT, 'tools', 'train.py'), '-opt', opt_path],
                                stdout=log, stderr=subprocess.STDOUT, text=True, env=env)


def _signal_after_first_state(process: subprocess.Popen, states: str, sig=signal.SIGKILL) -> int:
    """Send ``sig`` once the first training state is written; the process's exit status."""
    wait_for(os.path.join(states, f'{EVERY}.state'), process)
    process.send_signal(sig)
    return process.wait(timeout=600)


def _load(exp: str, label: str):
    """The final checkpoint's tensors: ``net_g`` is ``.safetensors`` (the trained part), ``net_frm`` ``.pth``."""
    if label == 'g':
        from safetensors.torch import load_file
        return {'params': load_file(os.path.join(exp, 'models', f'net_g_{TOTAL}.safetensors'))}
    return torch.load(os.path.join(exp, 'models', f'net_{label}_{TOTAL}.pth'), weights_only=True)


def test_sigkill_or_sigterm_after_the_first_checkpoint_then_auto_resume_gives_the_uninterrupted_weights(tmp_path):
    """One uninterrupted run; one SIGKILLed after its first checkpoint; one SIGTERMed (preempted) there, which saves
    the iteration it was in and exits with EXIT_PREEMPTED. Both resume with --auto_resume to the same weights."""
    names = [f'pytest_bitresume_{tag}_{os.getpid()}' for tag in ('whole', 'killed', 'preempted')]
    exps = [os.path.join(ROOT, 'experiments', name) for name in names]
    try:
        opts = [_tiny_options(tmp_path, name) for name in names]
        ensure_demo_faces(str(tmp_path / 'faces'), size=64)  # once, before the runs start in parallel
        bad = tmp_path / 'faces' / 'face_corrupt.png'  # among the faces: skipped with a warning, the run goes on
        bad.write_bytes(b'\x89PNG\r\n\x1a\n truncated')
        logs = [tmp_path / f'{name}.log' for name in names]
        whole, killed, preempted = (_start(opt, log) for opt, log in zip(opts, logs))  # in parallel, one thread each
        assert _signal_after_first_state(preempted, os.path.join(exps[2], 'training_states'), signal.SIGTERM) == \
            EXIT_PREEMPTED, logs[2].read_text()[-3000:]
        _signal_after_first_state(killed, os.path.join(exps[1], 'training_states'))
        assert whole.wait(timeout=600) == 0, logs[0].read_text()[-3000:]
        assert f'skipping {bad}: cannot decode image file {bad}' in logs[0].read_text()
        assert not os.path.exists(os.path.join(exps[1], 'training_states', f'{TOTAL}.state'))  # really cut short
        said = re.findall(r'Preempted \(SIGTERM\): saved the state and checkpoints of iteration (\d+)',
                          logs[2].read_text())
        assert len(said) == 1, logs[2].read_text()[-3000:]
        stopped = int(said[0])
        assert EVERY < stopped < TOTAL  # the iteration in progress when the signal came, not a checkpoint's
        assert sorted(os.listdir(os.path.join(exps[2], 'training_states'))) == sorted(
            f'{it}.state' for it in {EVERY, stopped, *range(EVERY, stopped + 1, EVERY)})
        for opt, exp, resumes_at in ((opts[1], exps[1], 'iter: '), (opts[2], exps[2], f'iter: {stopped}.')):
            result = run_tools_train(opt, '--auto_resume')
            assert result.returncode == 0, result.stderr[-3000:]
            log = result.stdout + result.stderr
            assert 'Resuming training from epoch: ' in log and resumes_at in log and 'continues after its first' in log
            for label, key in (('g', 'params'), ('frm', 'state_dict')):
                expected, resumed = _load(exps[0], label)[key], _load(exp, label)[key]
                assert expected.keys() == resumed.keys()
                diff = max(float((expected[k].float() - resumed[k].float()).abs().max()) for k in expected)
                assert diff == 0.0, f'{exp}: net_{label}_{TOTAL}: max abs difference {diff}'
    finally:
        for name, exp in zip(names, exps):
            shutil.rmtree(exp, ignore_errors=True)
            shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)
