"""Small fixes that let BasicSR 1.4.2's own pipelines run on CPU-only machines.

``basicsr.train.load_resume_state`` maps resume states onto ``torch.cuda.current_device()``, which raises without a
GPU, so ``--auto_resume`` fails on the CPU. :func:`load_resume_state` does the same search (the newest
``experiments/<name>/training_states/<iter>.state``) and maps onto the GPU when there is one, else the CPU. It reads
the state with :func:`~drward.utils.safe_load.load_training_state` (no code from the file runs; BasicSR unpickles
it whole).
"""
from __future__ import annotations

import os.path as osp

import torch
from basicsr.utils import check_resume, scandir

from drward.utils.safe_load import load_training_state


def load_resume_state(opt: dict):
    """BasicSR's resume-state lookup (``auto_resume`` or ``path.resume_state``), loadable on any device."""
    path = None
    if opt['auto_resume']:
        folder = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(folder):
            iters = [float(v.split('.state')[0]) for v in scandir(folder, suffix='state', recursive=False)]
            if iters:
                path = osp.join(folder, f'{max(iters):.0f}.state')
                opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
    if path is None:
        return None
    location = f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'
    state = load_training_state(path, map_location=location)
    check_resume(opt, state['iter'])
    return state


def install() -> None:
    """Route BasicSR's train pipeline through :func:`load_resume_state`."""
    import basicsr.train
    basicsr.train.load_resume_state = load_resume_state
