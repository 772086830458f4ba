"""Load a repo option file the way BasicSR's parse_options would, with every output path under a tmp folder; run
tools/train.py on one."""
import contextlib
import os
import os.path as osp
import shutil
import subprocess
import sys

import yaml

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))


def read_option_file(name: str) -> dict:
    """``options/<name>`` as a dict, as written (no paths changed)."""
    with open(osp.join(ROOT, 'options', name)) as f:
        return yaml.safe_load(f)


def load_option_file(name: str, tmp_path, is_train: bool = True) -> dict:
    opt = read_option_file(name)
    opt.update(is_train=is_train, dist=False, rank=0, world_size=1, auto_resume=False)
    for phase, dataset in opt.get('datasets', {}).items():
        dataset['phase'] = 'train' if phase.startswith('train') else 'val'
        dataset['scale'] = opt.get('scale', 1)
        for key in ('dataroot_gt', 'dataroot_lq'):
            if key in dataset and not osp.isabs(dataset[key]):
                dataset[key] = str(tmp_path / 'datasets' / osp.basename(dataset[key]))
    exp = tmp_path / 'experiments' / opt['name']
    opt['path'].update(experiments_root=str(exp), models=str(exp / 'models'),
                       training_states=str(exp / 'training_states'), log=str(exp),
                       visualization=str(exp / 'visualization'))
    for key in ('models', 'training_states', 'visualization'):
        os.makedirs(opt['path'][key], exist_ok=True)
    return opt


def run_tools_train(opt_path, *extra) -> subprocess.CompletedProcess:
    """``python tools/train.py -opt <opt_path> [extra...]`` single-threaded, output captured (10 min limit)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), '-opt', str(opt_path), *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def short_training_option(name: str, tmp_path, run_name: str, total_iter: int, every: int) -> dict:
    """Repo option file ``name`` cut to a quick tools/train.py run: ``total_iter`` iterations, the FRM update and
    checkpoints every ``every``, a log line per iteration, no validation, faces under ``tmp_path/faces``; its
    experiment folder is ``ROOT/experiments/<run_name>`` (BasicSR's layout)."""
    opt = read_option_file(name)
    opt['name'] = run_name
    opt['train'].update(total_iter=total_iter)
    opt['train']['frm_update']['every'] = every
    opt['logger'].update(save_checkpoint_freq=every, print_freq=1)
    opt.pop('val')
    opt['datasets'].pop('val')
    opt['datasets']['train']['dataroot_gt'] = str(tmp_path / 'faces')
    return opt


@contextlib.contextmanager
def tools_train_experiment(name: str, prefix: str):
    """Yield ``(opt, experiment folder)``: option file ``name`` as a dict, renamed ``<prefix>_<pid>`` so parallel runs
    don't collide; its ``experiments/`` and ``tb_logger/`` folders under the repo root are removed afterwards."""
    opt = read_option_file(name)
    opt['name'] = f'{prefix}_{os.getpid()}'
    try:
        yield opt, osp.join(ROOT, 'experiments', opt['name'])
    finally:
        shutil.rmtree(osp.join(ROOT, 'experiments', opt['name']), ignore_errors=True)
        shutil.rmtree(osp.join(ROOT, 'tb_logger', opt['name']), ignore_errors=True)


def write_options(opt: dict, path) -> str:
    """``opt`` as a YAML option file at ``path``; returns the path."""
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    return str(path)
