"""FRMModel: fine-tuning the Face Reward Model on preference pairs, as a BasicSR model (paper: FRM training).

The paper builds its FRM by fine-tuning HPS v2 on face preference pairs; the authors never released this code.
One iteration, on a batch of :class:`~drward.data.preference_pair_dataset.PreferencePairDataset` pairs
``(I_A, I_B, T, y)`` with ``y`` = P(A preferred):

1. ``s_k = exp(logit_scale)·cos(e_Ik, e_T)`` for ``k ∈ {A, B}`` (``FaceRewardModel.preference_logits``);
2. ``L_FRM = −mean_b Σ_j y_bj · log softmax([s_A, s_B])_j`` (``PreferenceLoss``; soft labels honoured);
3. backward into the unlocked groups only, optional gradient-norm clip, AdamW step with decoupled weight decay on
   ≥ 2-D weights (``build_frm_optimizer``); the learning rate warms up linearly over ``train.warmup_iter``
   (BasicSR's ``update_learning_rate``), then follows ``train.scheduler`` or stays constant.

HPS v2's recipe is the default (its ``configs/HPSv2.sh`` and open_clip's ViT defaults): AdamW lr 3.3e-6, betas
(0.9, 0.98), eps 1e-6, weight decay 0.35, batch 16, warm-up 500, unlocked 20 image groups / 11 text layers.

Validation: pair accuracy (pairs with a decisive label, ``y ≠ 0.5``, whose higher score is the preferred image)
and the mean ``L_FRM`` on held-out pairs, logged and written to tensorboard (``metrics/<dataset>/pair_acc``,
``metrics/<dataset>/val_loss``); ``val.val_at_start`` also measures the starting FRM before the first step.

Across P processes (``--launcher``): the global batch is P × ``batch_size_per_gpu`` pairs; the unlocked groups are
synchronised by DistributedDataParallel (:func:`~drward.models.parallel.wrap_for_training` around
``preference_logits``; ×P after DDP's average when ``pref_opt`` sums over its pairs), logs are averaged over the
ranks, rank 0 alone validates and writes; ``train.shard_optimizer_states`` splits the AdamW states across ranks.

Checkpoints: ``net_frm_<iter>.pth`` (``net_frm_latest.pth`` at the end) in the official HPS v2 / FRM layout
``{'state_dict': clip weights}``, what ``RewardLoss``'s ``frm.checkpoint`` loads; training states hold the
optimiser (and scheduler), so BasicSR's ``--auto_resume`` restores both.
"""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict
from contextlib import nullcontext
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.losses import build_loss
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from drward.archs.frm_arch import FaceRewardModel, build_frm, save_frm
from drward.losses.preference_loss import PreferenceLoss
from drward.models.frm_optim import build_frm_optimizer, global_batch_scale, preference_step
from drward.models.model_options import ADAMW, LOSS, TRAIN_OPTIONS, VAL_OPTIONS, section
from drward.models.parallel import wrap_for_training
from drward.models.training_state import ResumableStateMixin
from drward.utils.curves import CurveRecorder
from drward.utils.distributed import mean_over_ranks
from drward.utils.option_schema import REQUIRED, Bool, ByRegistry, Int, Num, Option
from drward.utils.options import OptionError
from drward.utils.precision_check import mixed_precision_dtype
from drward.utils.registry import base_name, register

BATCH_KEYS = ('img_a', 'img_b', 'caption', 'label')
#: HPS v2's optimiser (configs/HPSv2.sh: lr 3.3e-6, wd 0.35; open_clip's ViT defaults: betas, eps).
HPS_V2_OPTIM = {'type': 'AdamW', 'lr': 3.3e-6, 'betas': (0.9, 0.98), 'eps': 1e-6, 'weight_decay': 0.35}


def _concat_batches(batches: List[Dict]) -> Dict:
    return {'img_a': torch.cat([b['img_a'] for b in batches]), 'img_b': torch.cat([b['img_b'] for b in batches]),
            'label': torch.cat([b['label'].reshape(-1) for b in batches]),
            'caption': [c for b in batches for c in b['caption']]}


def rebatch(dataloader, size: int) -> Iterator[Dict]:
    """Batches of ``size`` pairs from any loader (BasicSR's validation loaders yield one pair at a time)."""
    buffer, count = [], 0
    for data in dataloader:
        buffer.append(data)
        count += data['img_a'].shape[0]
        if count >= size:
            yield _concat_batches(buffer)
            buffer, count = [], 0
    if buffer:
        yield _concat_batches(buffer)


@register(MODEL_REGISTRY)
class FRMModel(ResumableStateMixin, BaseModel):
    """BasicSR model fine-tuning a :class:`FaceRewardModel` (option ``network_frm``) on preference pairs.

    Options: ``network_frm`` (FaceRewardModel's keys: ``model_name``, ``checkpoint`` (HPS v2 file),
    ``unlocked_image_groups``, ``unlocked_text_layers``, ``gradient_checkpointing``, ...); ``path.pretrain_network_frm``
    (start from an earlier FRM checkpoint instead); ``train`` (:attr:`train_options`); ``val`` (:attr:`val_options`).
    """

    #: Top-level keys; ``train`` and ``val`` below (docs/design.md §3; a subclass inherits them and adds its own).
    options = {'network_frm': Option(ByRegistry(ARCH_REGISTRY), REQUIRED, 'the FRM: FaceRewardModel options')}
    train_options = {
        **TRAIN_OPTIONS,
        'grad_clip': Option(Num(0, lo_open=True, nullable=True), None, 'gradient-norm clip (~: measured only)'),
        'optim_frm': Option(ADAMW, None, "the FRM's AdamW; keys not given: HPS_V2_OPTIM (HPS v2's recipe)"),
        'pref_opt': Option(LOSS, {'type': 'PreferenceLoss'}, 'L_FRM, the preference loss'),
    }
    val_options = {
        **VAL_OPTIONS,
        'val_at_start': Option(Bool(), False, 'also measure the starting FRM before the first step'),
        'batch_size': Option(Int(1), 16, 'pairs scored at once in validation'),
        'pbar': Option(Bool(), False, "BasicSR's validation progress bar"),
    }

    def __init__(self, opt):
        super().__init__(opt)
        frm_opt = self._frm_options()
        self.frm: FaceRewardModel = build_frm(frm_opt).to(self.device)
        n_all = sum(p.numel() for p in self.frm.parameters())
        n_trained = sum(p.numel() for p in self.frm.trainable_parameters())
        get_root_logger().info(f'FRMModel: {self.frm.model_name} FRM from {frm_opt.get("checkpoint") or "random"}, '
                               f'{n_trained:,} of {n_all:,} parameters trainable')
        if self.frm.is_tiny:
            get_root_logger().warning('FRMModel: the FRM is a TINY model (CPU demo and tests, not a usable reward)')
        self.val_opt = section(self, 'val', opt.get('val'))
        self.val_batch_size = self.val_opt['batch_size']
        self.best_val: Dict[str, Tuple[float, object]] = {}
        self._pending_tb: List[Tuple[str, float, int]] = []
        self.autocast_dtype = None
        self.log_dict: Dict[str, float] = OrderedDict()
        self.curves = CurveRecorder(opt)  # experiments/<name>/training_curves.png
        if self.is_train:
            self.init_training_settings()

    # ------------------------------------------------------------------------------------------------ set-up
    def _frm_options(self) -> Dict:
        """``network_frm`` with the checkpoint to start from: resume > ``pretrain_network_frm`` > ``checkpoint``."""
        if 'network_frm' not in self.opt:
            raise OptionError('FRMModel: the option file needs a network_frm section (FaceRewardModel options)')
        frm_opt = dict(self.opt['network_frm'])
        if base_name(frm_opt.get('type', 'FaceRewardModel')) != 'FaceRewardModel':
            raise OptionError(f"FRMModel: network_frm type must be FaceRewardModel, got {frm_opt['type']!r}")
        path_opt = self.opt['path']
        resume = path_opt.get('resume_state')
        if resume and self.is_train:
            it = osp.splitext(osp.basename(resume))[0]
            frm_opt['checkpoint'] = osp.join(path_opt['models'], f'net_frm_{it}.pth')
            frm_opt['checkpoint_key'] = 'path.resume_state (the net_frm_<iter>.pth beside it)'
        elif path_opt.get('pretrain_network_frm'):
            frm_opt['checkpoint'] = path_opt['pretrain_network_frm']
            frm_opt['checkpoint_key'] = 'path.pretrain_network_frm'
        else:
            frm_opt.setdefault('checkpoint_key', 'network_frm.checkpoint')
        return frm_opt

    def init_training_settings(self) -> None:
        train_opt = section(self, 'train', self.opt['train'])
        self.frm.train()
        grad_clip = train_opt['grad_clip']
        self.grad_clip = float(grad_clip) if grad_clip else float('inf')  # inf: measure the norm, never clip
        precision = train_opt['mixed_precision']
        try:  # 'auto': bf16 where self.device runs it natively, else fp32 (fp16 would need a gradient scaler)
            self.autocast_dtype = mixed_precision_dtype(precision, self.device, 'FRMModel')
        except ValueError as error:
            raise OptionError(str(error)) from None
        self.cri_pref = build_loss(dict(train_opt['pref_opt'])).to(self.device)
        self.frm_train = wrap_for_training(self.frm, 'preference_logits', self.opt, self.device)  # DDP when dist
        self.optimizer_frm = build_frm_optimizer(self.frm, {**HPS_V2_OPTIM, **(train_opt['optim_frm'] or {})},
                                                 shard=train_opt['shard_optimizer_states'])
        self.optimizers.append(self.optimizer_frm)
        if train_opt['scheduler']:
            self.setup_schedulers()
        for group in self.optimizer_frm.param_groups:
            group.setdefault('initial_lr', group['lr'])  # BasicSR's warm-up scales from it; schedulers set it too
        resuming = bool(self.opt['path'].get('resume_state'))
        self._start_validation_pending = self.val_opt['val_at_start'] and not resuming
        self.skipped_steps = 0

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """BasicSR's linear warm-up ``lr = lr_0·it/warmup_iter``; without a scheduler, ``lr_0`` from then on.

        (BasicSR alone would leave the last warm-up value, ``lr_0·(warmup_iter − 1)/warmup_iter``, in place.)
        """
        super().update_learning_rate(current_iter, warmup_iter)
        if not self.schedulers and current_iter >= warmup_iter:
            for optimizer in self.optimizers:
                for group in optimizer.param_groups:
                    group['lr'] = group['initial_lr']

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------------------------------------ training
    def feed_data(self, data: Dict) -> None:
        """A PreferencePairDataset batch: ``img_a``, ``img_b`` (B, 3, S, S) in [0, 1], ``caption``, ``label``."""
        missing = [key for key in BATCH_KEYS if key not in data]
        if missing:
            raise KeyError(f'FRMModel.feed_data: the batch lacks {missing}; it takes PreferencePairDataset batches '
                           f'with keys {list(BATCH_KEYS)}')
        self.img_a = data['img_a'].to(self.device)
        self.img_b = data['img_b'].to(self.device)
        self.captions = list(data['caption'])
        self.labels = data['label'].to(self.device).float()

    def optimize_parameters(self, current_iter: int) -> None:
        """One ``L_FRM`` step; logs ``l_frm``, ``frm_acc`` (on the batch, before the step), the gradient norm,
        ``logit_scale`` and ``inv_temperature`` = exp(logit_scale) = 1/τ."""
        if self._start_validation_pending:
            self._start_validation_pending = False
            self.validate_at_start(current_iter - 1)
        with self._autocast():
            stats = preference_step(self.frm, self.optimizer_frm, self.cri_pref, self.img_a, self.img_b,
                                    self.captions, self.labels, grad_clip=self.grad_clip, forward=self.frm_train,
                                    after_backward=self._global_batch_gradient)
        if stats.pop('frm_skipped', 0.0):
            self.skipped_steps += 1
            get_root_logger().warning(f'FRMModel: non-finite L_FRM at iter {current_iter}; step skipped '
                                      f'({self.skipped_steps} skipped so far)')
            stats = {'skipped_steps': float(self.skipped_steps)}
        log = OrderedDict(stats)
        log['logit_scale'] = float(self.frm.clip.logit_scale.detach())
        log['inv_temperature'] = float(self.frm.logit_scale_exp.detach())
        self.log_dict = log = OrderedDict(mean_over_ranks(log))  # one process: unchanged
        self.curves.train(current_iter, log)

    def _global_batch_gradient(self) -> None:
        """DDP averages the ranks' gradients; a loss summed over its pairs wants their sum (× P)."""
        scale = global_batch_scale(self.cri_pref.reduction)
        for p in self.frm.trainable_parameters():
            if scale != 1 and p.grad is not None:
                p.grad.mul_(scale)

    def extra_training_state(self) -> Dict[str, int]:
        return {'skipped_steps': self.skipped_steps}

    def load_extra_training_state(self, state: Dict) -> None:
        self.skipped_steps = int(state.get('skipped_steps', self.skipped_steps))

    def get_current_log(self) -> Dict[str, float]:
        return self.log_dict

    # ------------------------------------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate_pairs(self, dataloader) -> Dict[str, float]:
        """``pair_acc`` over decisive pairs (``y ≠ 0.5``), ``val_loss`` = mean ``L_FRM`` over all pairs."""
        was_training = self.frm.training
        self.frm.eval()
        criterion = PreferenceLoss(reduction='sum')
        loss_sum, correct, decisive, pairs = 0.0, 0, 0, 0
        for batch in rebatch(dataloader, self.val_batch_size):
            labels = batch['label'].to(self.device).float()
            with self._autocast():
                logits = self.frm.preference_logits(batch['img_a'].to(self.device), batch['img_b'].to(self.device),
                                                    batch['caption']).float()
            loss_sum += float(criterion(logits, labels))
            keep = (labels - 0.5).abs() > 1e-6
            correct += int((logits.argmax(dim=1) == (labels < 0.5).long())[keep].sum())
            decisive += int(keep.sum())
            pairs += labels.shape[0]
        self.frm.train(was_training)
        return {'pair_acc': correct / decisive if decisive else float('nan'),
                'val_loss': loss_sum / pairs if pairs else float('nan'), 'pairs': float(pairs),
                'decisive_pairs': float(decisive)}

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img) -> Dict[str, float]:
        name = self._dataset_name(dataloader.dataset)
        results = self.evaluate_pairs(dataloader)
        self._log_validation(name, results, current_iter, tb_logger)
        self.curves.validation(current_iter, name, {key: results[key] for key in ('pair_acc', 'val_loss')})
        return results

    def _dataset_name(self, dataset) -> str:
        """The dataset's ``name`` option: from ``dataset.opt`` (BasicSR's convention) or its ``datasets.val*`` entry."""
        name = (getattr(dataset, 'opt', None) or {}).get('name')
        if name:
            return name
        for phase, dataset_opt in self.opt.get('datasets', {}).items():
            if phase.split('_')[0] == 'val' and dataset_opt.get('pairs_file') == getattr(dataset, 'pairs_file', None):
                return dataset_opt['name']
        return 'val'

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.opt['rank'] == 0:
            return self.nondist_validation(dataloader, current_iter, tb_logger, save_img)
        return None

    def _log_validation(self, name: str, results: Dict[str, float], current_iter, tb_logger) -> None:
        best = self.best_val.get(name)
        if best is None or results['pair_acc'] >= best[0]:
            self.best_val[name] = best = (results['pair_acc'], current_iter)
        get_root_logger().info(
            f'Validation {name} @ iter {current_iter}: pair_acc {results["pair_acc"]:.4f} '
            f'(best {best[0]:.4f} @ iter {best[1]}), val_loss {results["val_loss"]:.4f} '
            f'on {int(results["pairs"])} pairs ({int(results["decisive_pairs"])} decisive)')
        scalars = [(f'metrics/{name}/{key}', results[key], current_iter) for key in ('pair_acc', 'val_loss')]
        if tb_logger is None:
            return
        for tag, value, it in self._pending_tb + scalars:
            tb_logger.add_scalar(tag, value, it)
        self._pending_tb = []

    def validate_at_start(self, current_iter: int) -> None:
        """Measure the starting FRM on every ``datasets.val*`` set (``val.val_at_start``); its tensorboard points
        are written with the next validation that has a tensorboard logger."""
        for phase, dataset_opt in self.opt.get('datasets', {}).items():
            if phase.split('_')[0] != 'val':
                continue
            loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=self.opt['num_gpu'],
                                      dist=self.opt['dist'], sampler=None, seed=self.opt.get('manual_seed'))
            results = self.validation(loader, current_iter, None, False)
            if results is not None:
                name = dataset_opt['name']
                self._pending_tb += [(f'metrics/{name}/{key}', results[key], current_iter)
                                     for key in ('pair_acc', 'val_loss')]

    def validation(self, dataloader, current_iter, tb_logger, save_img=False) -> Optional[Dict[str, float]]:
        if self.opt['dist']:
            return self.dist_validation(dataloader, current_iter, tb_logger, save_img)
        return self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, current_iter: int) -> str:
        """``<models>/net_frm_<iter>.pth`` (``net_frm_latest.pth`` for iter −1, BasicSR's end-of-training save)."""
        it = 'latest' if current_iter == -1 else current_iter
        return osp.join(self.opt['path']['models'], f'net_frm_{it}.pth')

    def save(self, epoch: int, current_iter: int) -> None:
        """The FRM in the official ``{'state_dict': ...}`` layout, and (BasicSR) the optimiser's training state;
        every rank calls it (the training state gathers from all), rank 0 alone writes."""
        writes = self.opt.get('rank', 0) == 0
        if writes:
            save_frm(self.frm, self.checkpoint_path(current_iter))
        self.save_training_state(epoch, current_iter)
        if current_iter == -1 and writes:  # BasicSR's save at the end of training
            self.curves.draw()
