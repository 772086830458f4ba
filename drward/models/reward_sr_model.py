"""Reward feedback with a dynamic FRM for any BasicSR restorer: ``RewardSRModel`` and ``RewardSRGANModel``.

The paper leaves non-diffusion restorers (GAN- or Transformer-based) unexplored; BasicSR's ``SRModel`` and
``SRGANModel`` train most of them. :class:`RewardFeedbackMixin` adds DiffusionReward's two pieces to such a model
without touching its own training step:

1. ``train.reward_opt`` (a :class:`~drward.losses.reward_loss.RewardLoss`; ``input_range`` defaults to ``'[0,1]'``,
   BasicSR's image range) joins the generator loss. It rides in BasicSR's pixel-loss slot: the model's
   ``cri_pix`` becomes :class:`RewardTermLoss` = ``L_pix(Î, I_GT) + L_reward(Î, T)``, so the generator step is
   BasicSR's own (``pixel_opt``, ``perceptual_opt``, ``gan_opt``, EMA, ``net_d_iters`` unchanged); the log
   splits the two again (``l_pix`` / ``l_g_pix`` and ``l_reward``).
2. ``train.frm_update`` (:class:`~drward.models.dynamic_frm.DynamicFRMUpdate`): after each step, on its
   iterations, the FRM learns to prefer ``I_GT`` over ``Î.detach()``. Its optimiser is the last of the model's
   ``optimizers`` (saved in BasicSR's training state); the FRM is saved as ``net_frm_<iter>.pth`` before the
   training state, and reloaded from there on resume.

Plus the reward-hacking monitor (``train.hack_monitor``, :mod:`drward.models.hack_monitor`) at every log step and
in validation. Put the mixin first: ``class RewardSRModel(RewardFeedbackMixin, SRModel)``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Optional

import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from drward.models.dynamic_frm import DynamicFRMUpdate
from drward.models.hack_monitor import HackMonitor, HackStats
from drward.models.validation import log_validation
from drward.utils.options import OptionError
from drward.utils.registry import register

#: The log keys BasicSR's models give their pixel loss (SRModel, SRGANModel).
PIXEL_LOG_KEYS = ('l_pix', 'l_g_pix')


class RewardTermLoss(nn.Module):
    """``L_pix(Î, I_GT) + L_reward(Î, T)`` in one loss slot; ``pixel`` may be None (reward alone).

    ``captions`` is called at each forward for the batch's captions (None: the reward's fallback caption).
    ``last_terms`` holds the last call's two (weighted, detached) terms, ``'pix'`` and ``'reward'``.
    """

    def __init__(self, pixel: Optional[nn.Module], reward: nn.Module, captions: Callable[[], Optional[List[str]]]):
        super().__init__()
        self.pixel, self.reward, self.captions = pixel, reward, captions
        self.last_terms: Dict[str, torch.Tensor] = {}

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        terms = OrderedDict()
        if self.pixel is not None:
            terms['pix'] = self.pixel(pred, target, **kwargs)
        terms['reward'] = self.reward(pred, captions=self.captions())
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return sum(terms.values())


class RewardFeedbackMixin:
    """Reward loss + dynamic FRM update + hack monitor on top of a BasicSR SR model (see the module docstring)."""

    captions: Optional[List[str]] = None
    _val_stats: Optional[HackStats] = None

    # ------------------------------------------------------------------------------------------------ set-up
    def init_training_settings(self) -> None:
        train_opt, owner = self.opt['train'], type(self).__name__
        if not train_opt.get('reward_opt'):
            raise OptionError(f'{owner}: train.reward_opt (a RewardLoss) is required')
        self.cri_reward = build_loss({'input_range': '[0,1]', **train_opt['reward_opt']}).to(self.device)
        self.reward_loss = self.cri_reward  # the rewards, behind drward.archs.reward.Reward
        self.frm = self.cri_reward.trained  # the trainable one (the FRM), or None
        for name, reward in zip(self.cri_reward.names, self.cri_reward.rewards):
            if reward.is_tiny:
                get_root_logger().warning(f'{owner}: the reward {name} is a TINY random model (plumbing demo, not '
                                          'results)')
        self.frm_update = DynamicFRMUpdate(self.frm, train_opt.get('frm_update'), owner)
        self.frm_update.resume(self.opt['path'])
        self.hack_monitor = HackMonitor(train_opt.get('hack_monitor'), owner, self.opt.get('logger'))
        super().init_training_settings()  # BasicSR's losses, optimisers (ours appended), schedulers
        self.cri_pix = RewardTermLoss(self.cri_pix, self.cri_reward, lambda: self.captions)

    def setup_optimizers(self) -> None:
        super().setup_optimizers()
        if self.frm_update.optimizer is not None:  # None: no trainable reward
            self.optimizers.append(self.frm_update.optimizer)

    def feed_data(self, data: Dict) -> None:
        super().feed_data(data)
        captions = data.get('caption')
        self.captions = list(captions) if captions is not None else None

    def _captions(self, n: int) -> List[str]:
        return self.cri_reward.captions_for(n, self.captions)

    # ------------------------------------------------------------------------------------------------ one step
    def optimize_parameters(self, current_iter: int) -> None:
        """BasicSR's step (the reward inside ``cri_pix``), then the FRM update and, at log steps, the monitor."""
        self.cri_pix.last_terms = {}
        super().optimize_parameters(current_iter)
        log = self.log_dict
        self._split_reward_from_pixel(log)
        restored = self.output.detach().float().clamp(0, 1)
        captions = self._captions(restored.shape[0])
        log.update(self.frm_update.maybe_step(current_iter, restored, self.gt, captions))
        log.update(self.hack_monitor.log_step(self.cri_reward.primary, restored, self.gt, captions, current_iter,
                                              self.cri_reward.extra_rewards))

    def _split_reward_from_pixel(self, log: Dict[str, float]) -> None:
        """BasicSR logged ``L_pix + L_reward`` under its pixel key: log the two terms apart."""
        terms = self.cri_pix.last_terms
        if 'reward' not in terms:  # no generator step this iteration (SRGAN's net_d_iters / net_d_init_iters)
            return
        key = next((k for k in PIXEL_LOG_KEYS if k in log), None)
        if key is not None and 'pix' in terms:
            log[key] = float(terms['pix'])
        elif key is not None:
            log.pop(key)
        log['l_reward'] = float(terms['reward'])
        log.update((name, float(value)) for name, value in self.cri_reward.last_terms.items())
        log['reward_restored'] = float(self.cri_reward.last_reward.mean())

    # ------------------------------------------------------------------------------------------------ validation
    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """BasicSR's validation; each ``test()`` also adds its batch to the monitor's :class:`HackStats`."""
        self._val_stats = HackStats() if getattr(self, 'cri_reward', None) is not None else None
        try:
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            stats, self._val_stats = self._val_stats, None
        if stats is not None and stats.count:
            dataset = dataloader.dataset.opt['name']
            results = stats.result()
            self.hack_monitor.check(results, current_iter, stream=f'val/{dataset}')
            log_validation(dataset, current_iter, results, tb_logger)

    def test(self) -> None:
        super().test()
        if self._val_stats is not None and getattr(self, 'gt', None) is not None:
            self._val_stats.add(self.cri_reward.primary, self.hack_monitor.hf, self.output, self.gt,
                                self._captions(self.output.shape[0]))

    # ------------------------------------------------------------------------------------------------ checkpoints
    def save(self, epoch: int, current_iter: int) -> None:
        """The FRM first (``net_frm_<iter>.pth``): the training state, written last by BasicSR, is what resume finds."""
        if getattr(self, 'frm_update', None) is not None:
            self.frm_update.save(self.frm_update.checkpoint_path(self.opt['path']['models'], current_iter))
        super().save(epoch, current_iter)


@register(MODEL_REGISTRY)
class RewardSRModel(RewardFeedbackMixin, SRModel):
    """BasicSR's ``SRModel`` + ``train.reward_opt`` + ``train.frm_update`` (+ ``train.hack_monitor``)."""


@register(MODEL_REGISTRY)
class RewardSRGANModel(RewardFeedbackMixin, SRGANModel):
    """BasicSR's ``SRGANModel`` (``network_d``, ``gan_opt``, ...) + reward feedback with a dynamic FRM."""
