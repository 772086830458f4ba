"""What drward changes in BasicSR 1.4.2's train pipeline (installed by ``tools/train.py``), and why.

* :func:`load_resume_state` — BasicSR's maps states onto ``torch.cuda.current_device()`` (fails without a GPU) and
  takes the newest ``<iter>.state`` even when a kill tore it. Ours maps onto the GPU when there is one, else the
  CPU, and ``--auto_resume`` takes the newest state whose files all load (:mod:`drward.utils.resume`).
* :func:`create_train_val_dataloader` — BasicSR's, with the train sampler replaced by
  :class:`~drward.utils.resumable_sampler.ResumableSampler` (the same order; items keyed by ``(seed, epoch,
  position)``; the loader draws its worker seeds from its own generator) and, on resume, started at the batch the
  interrupted epoch had reached instead of at its first.

BasicSR's ``fused_leaky_relu`` (StyleGAN2's discriminator and ``EqualLinear``, used by GFPGAN's training) calls a
compiled extension and has no fallback when it is not built (the pip wheel ships none): it fails with
``NameError: fused_act_ext``. :func:`native_fused_leaky_relu` computes the same
``scale · leaky_relu(x + b, slope)`` (``b`` broadcast along channels) with plain PyTorch ops.

GFPGAN's ``GFPGANModel`` passes Adam ``betas=(0**1, 0.99**1)`` = ``(0, 0.99)``, an int and a float, which
PyTorch ≥ 2.6 rejects ("betas must be either both floats or both Tensors"); :func:`float_betas` makes
``BaseModel.get_optimizer`` pass them as floats (the same values).

Multi-process runs (``--launcher pytorch`` / ``slurm``): BasicSR's ``init_dist`` hard-codes NCCL and
``torch.cuda.set_device``; :func:`drward.utils.distributed.init_dist` (gloo on the CPU, nccl on CUDA) takes its
place. ``--auto_resume`` searches on rank 0 and every rank loads the state rank 0 chose; the datasets are built by
rank 0 first (a dataset may write shared files, such as the demo faces), then by the others.

BasicSR's ``MessageLogger`` estimates the time left as ``mean · (total − iter − 1)``, one iteration short, which
prints ``eta: -1 day, 23:59:59`` on the last iteration; :class:`EtaMessageLogger` counts the iterations left as
``total − iter`` (0 s on the last one).

The train pipeline's model is built by :func:`build_training_model`: first the option file's ``deterministic``
setting is applied (:mod:`drward.utils.determinism`; BasicSR turned cuDNN benchmark on just before), then the
model is watched for preemption (:mod:`drward.utils.preemption`): SIGTERM / SIGUSR1 save the iteration in progress
and exit with status 75.

BasicSR's logger must not be created before its pipeline does so (it would lose its log file), so the resume
search's warnings are logged when the data loaders are built, right after.
"""
from __future__ import annotations

import os.path as osp
import sys
import types
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from basicsr.utils import MessageLogger, check_resume

from drward.utils import determinism, distributed, preemption, storage_faults
from drward.utils.resumable_sampler import ResumableSampler
from drward.utils.resume import load_state_file, newest_loadable_state, samples_done_in_epoch

_PENDING: Dict[str, Any] = {'notes': [], 'resume': None, 'sampler': None}


def _location() -> str:
    return f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'


def load_resume_state(opt: dict):
    """BasicSR's resume-state lookup (``auto_resume`` or ``path.resume_state``), loadable on any device."""
    state = None
    if opt['auto_resume']:
        folder = osp.join('experiments', opt['name'])
        path = None
        if distributed.rank() == 0:  # one search (it removes torn temporary files), every rank loads its choice
            path, state, notes = newest_loadable_state(osp.join(folder, 'training_states'),
                                                       osp.join(folder, 'models'),
                                                       load=lambda p: load_state_file(p, _location()))
            _PENDING['notes'] = notes
        path = distributed.broadcast_object(path)
        if path is not None:
            opt['path']['resume_state'] = path
            state = state if state is not None else load_state_file(path, _location())
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
    with distributed.rank_zero_first():
        result = list(_BASICSR['create_train_val_dataloader'](opt, logger))
    loader, sampler = result[0], result[1]
    if loader is not None:
        resumable = ResumableSampler(sampler.dataset, sampler.num_replicas, sampler.rank,
                                     opt['datasets']['train'].get('dataset_enlarge_ratio', 1),
                                     seed=int(opt.get('manual_seed') or 0))
        loader = basicsr.train.build_dataloader(sampler.dataset, opt['datasets']['train'], num_gpu=opt['num_gpu'],
                                                dist=opt['dist'], sampler=resumable, seed=opt['manual_seed'])
        loader.generator = resumable.loader_generator
        _PENDING['sampler'] = resumable  # its epoch goes into a preemption's state
        start_cpu_workers_from_fork_server(loader, opt, logger)
        _start_where_resumed(resumable, loader, logger)
        result[0], result[1] = loader, resumable
    return tuple(result)


def start_cpu_workers_from_fork_server(loader, opt: dict, logger) -> None:
    """On a CPU run, data-loader workers start from a fork server, not by forking the trainer.

    BasicSR's workers start at the first iteration, after the model is built: forked then, each worker shares the
    trainer's memory copy-on-write, and every page the trainer writes afterwards (optimiser steps, reused
    activation memory) is duplicated, the worker keeping the old one. With real-size weights in host memory that
    measured 5 GiB per worker within one DiffBIR ReFL step (the rehearsal's OOM). A fork server is a fresh small
    process; its workers import what they need (seconds, once per epoch). On CUDA the weights live on the GPU and
    forking stays cheap (BasicSR's default).
    """
    if loader.num_workers > 0 and not distributed.trains_on_cuda(opt):
        loader.multiprocessing_context = 'forkserver'
        logger.info(f'data loader: {loader.num_workers} worker(s) start from a fork server (CPU run)')


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


class EtaMessageLogger(MessageLogger):
    """BasicSR's progress line with the time left counted from ``total_iter − iter`` iterations, never negative.

    BasicSR computes ``eta = mean · (max_iters − iter − 1)``: with ``max_iters`` one past the last iteration that
    reads ``mean · (total_iter − iter)``, which is 0 on the last iteration instead of minus one iteration.
    """

    def __init__(self, opt: dict, start_iter: int = 1, tb_logger=None):
        super().__init__(opt, start_iter, tb_logger)
        self.max_iters = opt['train']['total_iter'] + 1


def build_training_model(opt: dict):
    """BasicSR's ``build_model`` after :func:`determinism.apply`; the model then watched for SIGTERM / SIGUSR1
    (:func:`preemption.watch`)."""
    from basicsr.utils import get_root_logger
    if determinism.apply(opt):
        get_root_logger().info('deterministic: deterministic algorithms, cuDNN benchmark and TF32 off')
    model = _BASICSR['build_model'](opt)
    sampler = _PENDING['sampler']
    storage_faults.guard_saves(model, get_root_logger().error)  # a full disk: one line, previous state intact
    preemption.watch(model, lambda: sampler.epoch if sampler is not None else 0, get_root_logger().info)
    return model


def native_fused_leaky_relu(input: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                            scale: float = 2 ** 0.5) -> torch.Tensor:
    """``scale · leaky_relu(input + bias, negative_slope)``, ``bias`` of shape (C,) added along dim 1."""
    shape = (1, bias.shape[0]) + (1, ) * (input.dim() - 2)
    return F.leaky_relu(input + bias.view(shape), negative_slope) * scale


def use_native_fused_leaky_relu() -> int:
    """Without BasicSR's compiled ``fused_act_ext``, point every loaded module's ``fused_leaky_relu`` at
    :func:`native_fused_leaky_relu`; returns how many modules were changed (0 when the extension is built)."""
    from basicsr.ops.fused_act import fused_act
    if hasattr(fused_act, 'fused_act_ext'):
        return 0
    original = fused_act.fused_leaky_relu
    # the module's own namespace (vars), so lazy modules' __getattr__ is never triggered
    modules = [m for m in list(sys.modules.values())
               if isinstance(m, types.ModuleType) and vars(m).get('fused_leaky_relu') is original]
    for module in modules:
        module.fused_leaky_relu = native_fused_leaky_relu
    return len(modules)


def float_betas(get_optimizer):
    """Wrap ``BaseModel.get_optimizer`` so that integer ``betas`` entries reach the optimiser as floats."""
    if getattr(get_optimizer, 'float_betas', False):
        return get_optimizer

    def wrapped(self, optim_type, params, lr, **kwargs):
        if 'betas' in kwargs:
            kwargs['betas'] = tuple(float(b) if isinstance(b, int) else b for b in kwargs['betas'])
        return get_optimizer(self, optim_type, params, lr, **kwargs)

    wrapped.float_betas = True
    return wrapped


_BASICSR: Dict[str, Any] = {}


def install() -> None:
    """Route BasicSR's train pipeline through :func:`load_resume_state` and :func:`create_train_val_dataloader`,
    start process groups with drward's :func:`~drward.utils.distributed.init_dist`, print a sane ETA, save and
    exit on SIGTERM / SIGUSR1 (:func:`build_training_model`), pass optimiser betas as
    floats, and use the native fused leaky ReLU when BasicSR's extension is not built."""
    import basicsr.train
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel
    _BASICSR.setdefault('create_train_val_dataloader', basicsr.train.create_train_val_dataloader)
    _BASICSR.setdefault('build_model', basicsr.train.build_model)
    basicsr.train.build_model = build_training_model
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.create_train_val_dataloader = create_train_val_dataloader
    basicsr.train.MessageLogger = EtaMessageLogger
    basicsr.utils.options.init_dist = distributed.init_dist  # parse_options calls it by this name
    BaseModel.get_optimizer = float_betas(BaseModel.get_optimizer)
    use_native_fused_leaky_relu()


__all__: List[str] = ['load_resume_state', 'create_train_val_dataloader', 'EtaMessageLogger', 'native_fused_leaky_relu',
                       'float_betas', 'install']
