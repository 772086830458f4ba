"""What drward changes in BasicSR 1.4.2's train pipeline (installed by ``tools/train.py``), and why.

* :func:`load_resume_state` — BasicSR's maps states onto ``torch.cuda.current_device()`` (fails without a GPU) and
  takes the newest ``<iter>.state`` even when a kill tore it. Ours maps onto the GPU when there is one, else the
  CPU, and ``--auto_resume`` takes the newest state whose files all load (:mod:`drward.utils.resume`).
* :func:`create_train_val_dataloader` — BasicSR's, with the train sampler replaced by
  :class:`~drward.data.resumable_sampler.ResumableSampler` (the same order; items keyed by ``(seed, epoch,
  position)``; the loader draws its worker seeds from its own generator) and, on resume, started at the batch the
  interrupted epoch had reached instead of at its first.

BasicSR's logger must not be created before its pipeline does so (it would lose its log file), so the resume
search's warnings are logged when the data loaders are built, right after.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, List

import torch
from basicsr.utils import check_resume

from drward.data.resumable_sampler import ResumableSampler
from drward.utils.resume import load_state_file, newest_loadable_state, samples_done_in_epoch

_PENDING: Dict[str, Any] = {'notes': [], 'resume': None}


def _location() -> str:
    return f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'


def load_resume_state(opt: dict):
    """BasicSR's resume-state lookup (``auto_resume`` or ``path.resume_state``), loadable on any device."""
    state = None
    if opt['auto_resume']:
        folder = osp.join('experiments', opt['name'])
        path, state, notes = newest_loadable_state(osp.join(folder, 'training_states'), osp.join(folder, 'models'),
                                                   load=lambda p: load_state_file(p, _location()))
        _PENDING['notes'] = notes
        if path is not None:
            opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        state = load_state_file(opt['path']['resume_state'], _location())
    _PENDING['resume'] = None if state is None else (state['epoch'], state['iter'])
    if state is None:
        return None
    if state.get('manual_seed') is not None and state['manual_seed'] != opt.get('manual_seed'):
        _PENDING['notes'].append(f"manual_seed {opt.get('manual_seed')} replaced by the resumed run's "
                                 f"{state['manual_seed']}")
        opt['manual_seed'] = state['manual_seed']
    check_resume(opt, state['iter'])
    return state


def create_train_val_dataloader(opt: dict, logger):
    """BasicSR's loaders, with a :class:`ResumableSampler` for the train set started where the resumed run was."""
    import basicsr.train
    for note in _PENDING['notes']:
        logger.warning(f'resume: {note}')
    _PENDING['notes'] = []
    result = list(_BASICSR['create_train_val_dataloader'](opt, logger))
    loader, sampler = result[0], result[1]
    if loader is not None:
        resumable = ResumableSampler(sampler.dataset, sampler.num_replicas, sampler.rank,
                                     opt['datasets']['train'].get('dataset_enlarge_ratio', 1),
                                     seed=int(opt.get('manual_seed') or 0))
        loader = basicsr.train.build_dataloader(sampler.dataset, opt['datasets']['train'], num_gpu=opt['num_gpu'],
                                                dist=opt['dist'], sampler=resumable, seed=opt['manual_seed'])
        loader.generator = resumable.loader_generator
        _start_where_resumed(resumable, loader, logger)
        result[0], result[1] = loader, resumable
    return tuple(result)


def _start_where_resumed(sampler: ResumableSampler, loader, logger) -> None:
    if _PENDING['resume'] is None:
        return
    epoch, it = _PENDING['resume']
    done = samples_done_in_epoch(it, epoch, len(loader), loader.batch_size)
    if done is None:
        logger.warning(f'resume: iteration {it} does not fall in epoch {epoch} at {len(loader)} batches per epoch '
                       '(other batch size or dataset?); the epoch restarts from its first batch')
        return
    sampler.start_at(epoch, done)
    logger.info(f'resume: epoch {epoch} continues after its first {done // loader.batch_size} batches')


_BASICSR: Dict[str, Any] = {}


def install() -> None:
    """Route BasicSR's train pipeline through :func:`load_resume_state` and :func:`create_train_val_dataloader`."""
    import basicsr.train
    _BASICSR.setdefault('create_train_val_dataloader', basicsr.train.create_train_val_dataloader)
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.create_train_val_dataloader = create_train_val_dataloader


__all__: List[str] = ['load_resume_state', 'create_train_val_dataloader', 'install']
