"""ReFLModel: DiffusionReward's reward feedback learning as a BasicSR model (docs/method.md, paper §3).

One iteration (= one generator step, over ``grad_accum`` micro-batches of the loaded batch):

1. ``Î = restorer.restore(I_LQ, T, grad_steps=N)``: the DDIM chain without gradient up to a stop step among the last
   M, then N gradient-enabled denoiser call(s), ``ẑ_0`` decoded;
2. ``L = λ_reg·L_reg + λ_dwt·L_DWT + λ_reward·L_reward + λ_lpips·L_LPIPS`` (official weights 1e-4, 0.01, 0.005,
   0.01 — each loss's ``loss_weight``), backpropagated into the restorer's trained parameters only;
3. AdamW step of the restorer (lr 5e-5, weight decay 0.01);
4. every ``n`` iterations (n = 10), the dynamic FRM update: pairs ``(Î.detach(), I_GT)`` with the GT's caption, GT
   preferred, ``0.1·Σ_b CE`` (PreferenceLoss, sum), its own AdamW (lr 2e-6, decoupled weight decay 0.35 on ≥2-D
   weights), gradient-norm clip 1.0 (:class:`~drward.models.dynamic_frm.DynamicFRMUpdate`);
5. at every log step (``logger.print_freq``), the reward-hacking monitor (:mod:`drward.models.hack_monitor`):
   ``hack_reward_gap`` and ``hack_hf_ratio`` of this batch under the current FRM, also measured in validation.

``grad_accum_mode`` (train option): ``mean`` (default, the paper's batch 1 × accumulation 4) averages the gradients of
all micro-batches and the FRM update sees every pair; ``last_microbatch`` reproduces the authors' code, whose
``zero_grad(); backward(); step()`` inside accelerate's ``accumulate`` wipes the first micro-batches' gradients: the
step applies the last micro-batch's gradient of ``L / grad_accum`` alone, and the FRM update sees that micro-batch's
pair only. Since the other micro-batches change nothing, that mode restores only the last one (same update, a
quarter of the compute). Their FRM loss is divided by ``grad_accum`` too (``0.1·CE/4``): that is the option
``frm_update.loss_weight: 0.025`` (``options/refl_diffbir_authors.yml``), not something this mode changes.

Across P processes (``tools/train.py --launcher pytorch`` under ``torchrun``, or ``slurm``; BasicSR's
``opt['dist']``) it trains one model on a global batch of P × ``batch_size_per_gpu`` faces: each rank restores its
own faces (BasicSR's ``EnlargedSampler`` share) with its own noise, stop step and η (its sampling generator is
seeded ``manual_seed + rank``); the restorer's trained part is synchronised by DistributedDataParallel over those
parameters only (:func:`~drward.models.parallel.wrap_for_training`), with ``no_sync()`` on all but the last
micro-batch, so one all-reduce per optimiser step; a non-finite loss on any rank skips the step on all of them;
the dynamic FRM update combines every rank's pairs (:class:`DynamicFRMUpdate`); the logged values are averaged
over the ranks; rank 0 alone writes checkpoints, training states (with every rank's random streams), images and
runs validation. ``train.shard_optimizer_states`` splits both AdamW states across the ranks
(``ZeroRedundancyOptimizer``; training states hold them consolidated). Learning rates and ``frm_update.every``
count optimiser steps, as in one process.

ReFLModel never knows which restorer it drives: anything implementing :class:`drward.archs.restorer.Restorer`.
Checkpoints hold only the restorer's trained part (``net_g_<iter>.safetensors``; older runs' ``.pth`` files still
load) and the FRM (``net_frm_<iter>.pth``, the official ``state_dict`` layout, loadable by ``RewardLoss`` and HPS v2's
code); training states hold both optimisers, so BasicSR's ``--auto_resume`` resumes both. ``train.ema_decay``
(BasicSR's key) keeps an EMA of the trained part, saved as ``net_g_ema_<iter>.safetensors`` and used by validation
(:mod:`drward.models.ema`).
"""
from __future__ import annotations

import math
import os
import os.path as osp
from collections import OrderedDict
from contextlib import nullcontext
from typing import Dict, List, Optional, Tuple

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from drward.archs.restorer import RestoreOutput, Restorer, load_restorer_weights, save_trained_part
from drward.models.batched_prefix import BatchedPrefix
from drward.models.dynamic_frm import DynamicFRMUpdate
from drward.models.ema import TrainedPartEMA
from drward.models.hack_monitor import HackMonitor
from drward.models.model_options import ADAMW, LOSS, TRAIN_OPTIONS, VAL_OPTIONS, section
from drward.models.parallel import make_optimizer, sync_on_last, wrap_for_training
from drward.models.training_state import ResumableStateMixin
from drward.models.validation import RestorationValidator
from drward.utils.curves import CurveRecorder, switch_line
from drward.utils.distributed import all_ranks_agree, mean_over_ranks
from drward.utils.host_memory import release_host_memory
from drward.utils.option_schema import REQUIRED, Bool, ByRegistry, Choice, Int, Num, Option, group
from drward.utils.options import OptionError
from drward.utils.precision_check import bf16_advice, mixed_precision_dtype
from drward.utils.registry import register

GRAD_ACCUM_MODES = ('mean', 'last_microbatch')
#: The generator loss terms, in the order they are logged, with the loss option that builds each.
TERMS = (('l_reg', 'reg_opt'), ('l_dwt', 'dwt_opt'), ('l_reward', 'reward_opt'), ('l_lpips', 'lpips_opt'))


def micro_batch_means(entries: List[Tuple[str, object]], count: int) -> Dict[str, float]:
    """The log of a step: tensor entries averaged over the ``count`` micro-batches, read from the device with one
    ``.tolist()`` (one synchronisation, not one per value); float entries (the sampler's info) the last one's."""
    tensors = [value for _, value in entries if isinstance(value, torch.Tensor)]
    values = iter(torch.stack(tensors).tolist()) if tensors else iter(())
    log: Dict[str, float] = OrderedDict()
    for name, value in entries:
        if isinstance(value, torch.Tensor):
            log[name] = log.get(name, 0.0) + next(values) / count
        else:
            log[name] = float(value)
    return log


def _split(batch_size: int, accum: int) -> List[slice]:
    """Micro-batch slices: ``accum`` chunks of (nearly) equal size covering the batch."""
    size = math.ceil(batch_size / accum)
    return [slice(i, min(i + size, batch_size)) for i in range(0, batch_size, size)]


@register(MODEL_REGISTRY)
class ReFLModel(ResumableStateMixin, BaseModel):
    """BasicSR model for DiffusionReward ReFL. See the module docstring for one iteration."""

    #: Top-level keys; ``train`` and ``val`` below (docs/design.md §3; a subclass inherits them and adds its own).
    options = {'network_g': Option(ByRegistry(ARCH_REGISTRY), REQUIRED, 'the restorer: a drward Restorer by type')}
    train_options = {
        **TRAIN_OPTIONS,
        'grad_accum': Option(Int(1), 4, 'micro-batches per optimiser step (the paper: batch 1 x accumulation 4)'),
        'grad_accum_mode': Option(Choice(*GRAD_ACCUM_MODES), 'mean', "mean, or the authors' last_microbatch"),
        'grad_steps': Option(Int(1), 1, 'N: gradient-enabled denoiser calls at the stop step'),
        'grad_clip_g': Option(Num(0, lo_open=True, nullable=True), None, "the restorer's gradient-norm clip (~: none)"),
        'ema_decay': Option(Num(0, 1, nullable=True), None, "BasicSR's EMA of the trained part: "
                            'net_g_ema_<iter> beside net_g (null: none; drward/models/ema.py)'),
        'gradient_checkpointing': Option(Bool(), False, 'activation checkpointing in the restorer and the rewards'),
        'optim_g': Option(ADAMW, {'type': 'AdamW', 'lr': 5e-5, 'weight_decay': 0.01}, "the restorer's optimiser"),
        'reward_opt': Option(LOSS, REQUIRED, 'L_reward: a RewardLoss and its rewards'),
        'reg_opt': Option(LOSS, None, 'L_reg (none: left out)'),
        'dwt_opt': Option(LOSS, None, 'L_DWT (none: left out)'),
        'lpips_opt': Option(LOSS, None, 'L_LPIPS (none: left out)'),
        'frm_update': Option(group(DynamicFRMUpdate.options), None, 'the dynamic FRM update'),
        'hack_monitor': Option(group(HackMonitor.options), None, 'the reward-hacking monitor'),
        **BatchedPrefix.options,
    }
    val_options = {**VAL_OPTIONS, **RestorationValidator.options}

    def __init__(self, opt):
        super().__init__(opt)
        self.net_g = build_network(opt['network_g'])
        if not isinstance(self.net_g, Restorer):
            raise TypeError(f"ReFLModel: network_g type {opt['network_g'].get('type')} is not a drward Restorer")
        self.net_g = self.net_g.to(self.device)
        self.reward_loss = None  # train.reward_opt: the rewards, behind drward.archs.reward.Reward
        self.frm = None  # its trainable reward (the FRM), trained by the dynamic update
        self.ema = None  # train.ema_decay: an EMA of the trained part (drward/models/ema.py)
        load_path = opt['path'].get('pretrain_network_g')
        if load_path:
            self.load_trained(load_path)
        if getattr(self.net_g, 'is_tiny', False):
            get_root_logger().warning('ReFLModel: network_g uses TINY random models (plumbing demo, not results)')
        self.validator = RestorationValidator(self)
        self.curves = CurveRecorder(opt)  # experiments/<name>/training_curves.png
        if self.is_train:
            self.init_training_settings()

    # ------------------------------------------------------------------------------------------------ set-up
    def init_training_settings(self) -> None:
        train_opt = section(self, 'train', self.opt['train'])
        self.net_g.train()
        self.grad_accum = train_opt['grad_accum']
        self.grad_accum_mode = train_opt['grad_accum_mode']
        self.grad_steps = train_opt['grad_steps']
        self.grad_clip_g = train_opt['grad_clip_g']
        precision = train_opt['mixed_precision']
        try:  # 'auto': bf16 where self.device runs it natively, else fp32 (fp16 would need a gradient scaler)
            self.autocast_dtype = mixed_precision_dtype(precision, self.device, 'ReFLModel')
        except ValueError as error:
            raise OptionError(str(error)) from None
        advice = bf16_advice(self.device) if precision == 'bf16' or getattr(self.net_g, 'weight_dtype', None) == \
            torch.bfloat16 else None
        if advice:  # pre-Ampere GPUs emulate bf16: say so before hours of slow training
            get_root_logger().warning(f'ReFLModel: {advice}')
        self.criteria = {term: build_loss(train_opt[key]).to(self.device) if train_opt[key] else None
                         for term, key in TERMS}
        self.reward_loss = self.criteria['l_reward']
        self.frm = self.reward_loss.trained
        for name, reward in zip(self.reward_loss.names, self.reward_loss.rewards):
            if reward.is_tiny:
                get_root_logger().warning(f'ReFLModel: the reward {name} is a TINY random model (plumbing demo, '
                                          'not results)')
        if train_opt['gradient_checkpointing']:
            self.net_g.set_gradient_checkpointing(True)
            for reward in self.reward_loss.rewards:
                reward.set_gradient_checkpointing(True)
        self.net_g_train = wrap_for_training(self.net_g, 'restore', self.opt, self.device)  # DDP when dist
        shard = train_opt['shard_optimizer_states']
        optim_g = dict(train_opt['optim_g'])
        self.optimizer_g = make_optimizer(optim_g.pop('type'), list(self.net_g.trainable_parameters()), shard,
                                          **optim_g)
        self.optimizers.append(self.optimizer_g)
        self.ema = TrainedPartEMA.from_options(self.net_g, train_opt['ema_decay'],
                                               self.opt['path'].get('pretrain_network_g'))
        self.frm_update = DynamicFRMUpdate(self.frm, train_opt['frm_update'], 'ReFLModel', self._autocast,
                                           shard=shard, idle_optimizers=[self.optimizer_g])
        self.frm_update.resume(self.opt['path'])
        self.optimizer_frm = self.frm_update.optimizer
        if self.optimizer_frm is not None:  # None: no trainable reward
            self.optimizers.append(self.optimizer_frm)
        self.hack_monitor = HackMonitor(train_opt['hack_monitor'], 'ReFLModel', self.opt.get('logger'))
        self.batched_prefix = BatchedPrefix(train_opt, self.net_g)  # train.batched_prefix: one prefix for all chunks
        if train_opt['scheduler']:
            self.setup_schedulers()
        self.generator = torch.Generator().manual_seed(int(self.opt.get('manual_seed') or 0) + self.opt['rank'])
        self.log_dict: Dict[str, float] = OrderedDict()
        self.skipped_steps = 0

    # ------------------------------------------------------------------------------------------------ data
    def feed_data(self, data: Dict) -> None:
        self.lq = data['lq'].to(self.device)
        self.gt = data['gt'].to(self.device) if 'gt' in data else None
        captions = data.get('caption')
        self.captions = list(captions) if captions is not None else None

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------------------------------------ losses
    def generator_terms(self, out: RestoreOutput, gt: torch.Tensor, captions: Optional[List[str]]) -> Dict:
        """The weighted terms of ``L`` for one micro-batch (each loss carries its own ``loss_weight``)."""
        gt_signed = gt * 2 - 1
        terms = OrderedDict()
        if self.criteria['l_reg'] is not None:
            terms['l_reg'] = self.criteria['l_reg'](out.reg_pairs)
        if self.criteria['l_dwt'] is not None:
            terms['l_dwt'] = self.criteria['l_dwt'](out.image, gt_signed)
        terms['l_reward'] = self.criteria['l_reward'](out.image, captions=captions)
        if self.criteria['l_lpips'] is not None:
            terms['l_lpips'] = self.criteria['l_lpips'](out.image, gt_signed)
        return terms

    # ------------------------------------------------------------------------------------------------ one step
    def microbatches(self) -> Tuple[List[slice], int]:
        """The micro-batch slices of the fed batch, and what each one's loss is divided by (``grad_accum_mode``).

        ``last_microbatch`` first narrows the fed batch (LQ, GT, captions) to its last micro-batch, the only one
        whose gradient and FRM pair the authors' code keeps; its loss is divided by ``grad_accum`` as theirs is.
        """
        chunks = _split(self.lq.shape[0], self.grad_accum)
        if self.grad_accum_mode == 'mean':
            return chunks, len(chunks)
        last = chunks[-1]
        self.lq, self.gt = self.lq[last], self.gt[last]
        self.captions = self.captions[last] if self.captions is not None else None
        return [slice(0, self.lq.shape[0])], self.grad_accum

    def optimize_parameters(self, current_iter: int) -> None:
        chunks, divisor = self.microbatches()
        self.optimizer_g.zero_grad(set_to_none=True)
        passed = self._generator_backward(chunks, divisor, current_iter)
        if passed is None:
            return
        log, restored = passed
        if self.grad_clip_g:
            log['grad_norm_g'] = float(torch.nn.utils.clip_grad_norm_(self.optimizer_g.param_groups[0]['params'],
                                                                    self.grad_clip_g))
        self.optimizer_g.step()
        self.optimizer_g.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.net_g.release_compute_caches()  # stale casts of the old weights: free during the FRM update
        release_host_memory()
        with torch.no_grad(), self._autocast():
            gt_scores = self.reward_loss.primary.score(self.gt, self._captions(len(restored)))
            log['reward_gt'] = float(gt_scores.float().mean())
        if self.frm_update.due(current_iter):
            log.update(self.update_frm(restored, self.gt))
        if self.hack_monitor.due(current_iter):
            log.update(self.hack_monitor.measure(self.reward_loss.primary, restored, self.gt,
                                                 self._captions(len(restored)), self.reward_loss.extra_rewards))
        log = OrderedDict(mean_over_ranks(log))  # one process: unchanged
        self.hack_monitor.check_step(log, current_iter)
        self.log_dict = log
        self.curves.train(current_iter, log)

    def _generator_backward(self, chunks: List[slice], divisor: int,
                            current_iter: int) -> Optional[Tuple[Dict[str, float], torch.Tensor]]:
        """Forward and backward of every micro-batch (DDP all-reduces the gradient sum at the last one); the
        per-micro-batch mean of the logged terms and the restored images in [0, 1]. None when a loss is not finite
        on some rank: then every rank skips the step."""
        entries: List[Tuple[str, object]] = []  # (name, value) in log order; tensors read with one .tolist()
        restored = []
        with self._autocast():
            prefixes = self.batched_prefix.run(self.lq, chunks, self.grad_steps, self.generator)
        for index, chunk in enumerate(chunks):
            captions = self.captions[chunk] if self.captions is not None else None
            with sync_on_last(self.net_g_train, index, len(chunks)):
                with self._autocast():
                    out = self.net_g_train(self.lq[chunk], captions, grad_steps=self.grad_steps,
                                           generator=self.generator, **prefixes[index])
                    terms = self.generator_terms(out, self.gt[chunk], captions)
                    total = sum(terms.values())
                if not all_ranks_agree(bool(torch.isfinite(total))):
                    self._skip_step(current_iter, terms)
                    return None
                (total / divisor).backward()
            reward_terms = list(self.reward_loss.last_terms.items())  # several rewards: one term per reward
            entries += [(name, value.detach().float())
                        for name, value in list(terms.items()) + reward_terms + [('l_total', total)]]
            entries.append(('reward_restored', self.reward_loss.last_reward.detach().float().mean()))
            restored.append(((out.image.detach().float() + 1) / 2).clamp(0, 1))
            entries += [(key, float(value)) for key, value in out.info.items()]
        return micro_batch_means(entries, len(chunks)), torch.cat(restored)

    def _captions(self, n: int) -> List[str]:
        return self.reward_loss.captions_for(n, self.captions)

    def _skip_step(self, current_iter: int, terms: Dict) -> None:
        self.optimizer_g.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        values = {k: float(v.detach()) for k, v in terms.items()}
        get_root_logger().warning(f'ReFLModel: non-finite loss at iter {current_iter} {values}; step skipped '
                                  f'({self.skipped_steps} skipped so far)')
        self.log_dict = OrderedDict(skipped_steps=float(self.skipped_steps))

    def update_frm(self, restored: torch.Tensor, gt: torch.Tensor) -> Dict[str, float]:
        """Dynamic FRM update on the pairs (Î, I_GT), the GT's caption, GT preferred (:class:`DynamicFRMUpdate`)."""
        return self.frm_update.step(restored, gt, self._captions(restored.shape[0]))

    def get_current_log(self) -> Dict[str, float]:
        return self.log_dict

    # ------------------------------------------------------------------------------------------------ validation
    def _validation_weights(self):
        """The EMA weights when there is an EMA (BasicSR validates ``net_g_ema``), else the training weights."""
        return self.ema.swapped_in() if self.ema is not None else nullcontext()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        with self._validation_weights():
            results = self.validator.run(dataloader, current_iter, tb_logger, save_img)
        self.curves.validation(current_iter, dataloader.dataset.opt['name'], results)

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        with self._validation_weights():
            results = self.validator.run(dataloader, current_iter, tb_logger, save_img)  # each rank its share
        if self.opt['rank'] == 0:
            self.curves.validation(current_iter, dataloader.dataset.opt['name'], results)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _model_path(self, label: str, current_iter: int, ext: str = '.pth') -> str:
        it = 'latest' if current_iter == -1 else current_iter
        return osp.join(self.opt['path']['models'], f'net_{label}_{it}{ext}')

    def save(self, epoch: int, current_iter: int) -> None:
        """Write the restorer's trained part, the FRM, and (BasicSR) both optimisers' training state; every rank
        calls it (the training state gathers from all), rank 0 alone writes."""
        writes = self.opt.get('rank', 0) == 0
        if writes:
            os.makedirs(self.opt['path']['models'], exist_ok=True)
            save_trained_part(self.net_g, self._model_path('g', current_iter, '.safetensors'))
            if self.ema is not None:  # beside net_g, as BasicSR's params_ema; resume reads it back
                self.ema.save(self._model_path('g_ema', current_iter, '.safetensors'))
            if self.frm is not None:
                self.frm_update.save(self._model_path('frm', current_iter))
        self.save_training_state(epoch, current_iter)
        if current_iter == -1 and writes:  # BasicSR's save at the end of training
            self.curves.draw()

    # ------------------------------------------------------------------------------------------------ resume
    def random_generators(self) -> Dict[str, torch.Generator]:
        """The restorer's sampling stream (z_T, stop step, η, DDIM noise), saved in every training state."""
        return {'restorer_sampling': self.generator}

    def extra_training_state(self) -> Dict[str, int]:
        return {'skipped_steps': self.skipped_steps, 'frm_updates': self.frm_update.updates,
                'frm_skipped': self.frm_update.skipped, 'frm_update': dict(self.frm_update.settings)}

    def load_extra_training_state(self, state: Dict) -> None:
        self.skipped_steps = int(state.get('skipped_steps', self.skipped_steps))
        self.frm_update.updates = int(state.get('frm_updates', self.frm_update.updates))
        self.frm_update.skipped = int(state.get('frm_skipped', self.frm_update.skipped))
        changed = self.frm_update.changes_since(state.get('frm_update'))
        if changed:  # e.g. the reward-hacking recipe switching the FRM updates on: marked in training_curves.png
            get_root_logger().warning(f'ReFLModel: {switch_line(self.resumed_iter, changed)}')
            self.curves.switch(self.resumed_iter, changed)

    def load_trained(self, path: str) -> None:
        load_restorer_weights(self.net_g, path)
        get_root_logger().info(f'ReFLModel: loaded the trained part of network_g from {path}')
