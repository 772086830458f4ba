"""A tiny ReFL run killed with SIGKILL after its first checkpoint and resumed with --auto_resume ends with the same
weights and FRM as an uninterrupted run, bit for bit (same machine, same thread count: the same kernels run on the
same inputs, so exact equality is the right test). A corrupt face among the training faces is skipped on the way.
Both runs use the batched no-grad prefix (train.batched_prefix), the real option files' default."""
import os
import shutil
import signal
import subprocess
import sys
import time

import torch
import yaml

from drward.data.demo_faces import ensure_demo_faces
from option_files import ROOT, run_tools_train

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


def _kill_after_first_state(process: subprocess.Popen, states: str) -> None:
    first = os.path.join(states, f'{EVERY}.state')
    deadline = time.time() + 300
    while not os.path.exists(first):
        assert process.poll() is None, 'the run ended before its first checkpoint'
        assert time.time() < deadline, 'no first checkpoint within 300 s'
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _load(exp: str, label: str):
    """The final checkpoint's tensors: ``net_g`` is ``.safetensors`` (the trained part), ``net_frm`` ``.pth``."""
    if label == 'g':
        from safetensors.torch import load_file
        return {'params': load_file(os.path.join(exp, 'models', f'net_g_{TOTAL}.safetensors'))}
    return torch.load(os.path.join(exp, 'models', f'net_{label}_{TOTAL}.pth'), weights_only=True)


def test_sigkill_after_the_first_checkpoint_then_auto_resume_gives_the_uninterrupted_weights(tmp_path):
    names = [f'pytest_bitresume_{tag}_{os.getpid()}' for tag in ('whole', 'killed')]
    exps = [os.path.join(ROOT, 'experiments', name) for name in names]
    try:
        whole_opt, killed_opt = (_tiny_options(tmp_path, name) for name in names)
        ensure_demo_faces(str(tmp_path / 'faces'), size=64)  # once, before the two runs start in parallel
        bad = tmp_path / 'faces' / 'face_corrupt.png'  # among the faces: skipped with a warning, the run goes on
        bad.write_bytes(b'\x89PNG\r\n\x1a\n truncated')
        logs = [tmp_path / f'{name}.log' for name in names]
        whole, killed = _start(whole_opt, logs[0]), _start(killed_opt, logs[1])  # in parallel: one thread each
        _kill_after_first_state(killed, os.path.join(exps[1], 'training_states'))
        assert whole.wait(timeout=600) == 0, logs[0].read_text()[-3000:]
        assert f'skipping {bad}: cannot decode image file {bad}' in logs[0].read_text()
        assert not os.path.exists(os.path.join(exps[1], 'training_states', f'{TOTAL}.state'))  # really cut short
        result = run_tools_train(killed_opt, '--auto_resume')
        assert result.returncode == 0, result.stderr[-3000:]
        log = result.stdout + result.stderr
        assert 'Resuming training from epoch' in log and 'continues after its first' in log
        for label, key in (('g', 'params'), ('frm', 'state_dict')):
            expected, resumed = _load(exps[0], label)[key], _load(exps[1], label)[key]
            assert expected.keys() == resumed.keys()
            diff = max(float((expected[k].float() - resumed[k].float()).abs().max()) for k in expected)
            assert diff == 0.0, f'net_{label}_{TOTAL}: max abs difference {diff}'
    finally:
        for name, exp in zip(names, exps):
            shutil.rmtree(exp, ignore_errors=True)
            shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)
