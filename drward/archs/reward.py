"""The reward interface the reward-feedback models drive (docs/rewards.md), the counterpart of ``Restorer``.

A reward scores restored faces: ``r = score(Î', T)`` per image (B,), higher = better, ``Î'`` in [0, 1], ``T`` the
captions (ignored by rewards that use none). ``score(..., grad=True)`` keeps the graph to the images (``∂r/∂Î'``)
and never to the reward's own weights (a generator step must not train the reward); ``grad=False`` scores without
gradient (the hack monitor, validation, ``reward_gt``).

A reward that says :attr:`Reward.trainable` is trained by the dynamic update
(:class:`~drward.models.dynamic_frm.DynamicFRMUpdate`): it gives pair logits (:meth:`Reward.preference_logits`,
``[s_a, s_b]`` per pair), the parameters the update steps (:meth:`Reward.trainable_parameters`) and its checkpoint
(:meth:`Reward.save_checkpoint` / :meth:`Reward.load_checkpoint`, ``net_frm_<iter>.pth``). The Face Reward Model
(:class:`~drward.archs.frm_arch.FaceRewardModel`) is the trainable one; pyiqa's metrics
(:class:`~drward.losses.iqa_reward.IQAReward`) are frozen ones.

Rewards are registered in :data:`REWARD_REGISTRY` (``@register(REWARD_REGISTRY)``) and built by ``type:`` from an
entry of ``train.reward_opt.rewards`` (:func:`build_reward`). An entry may name ``module:``, a dotted module name
(``my_lab.rewards``) or a ``.py`` file (relative to the working directory): it is imported first, so that its
``@register(REWARD_REGISTRY)`` runs, the way BasicSR's plugins register when imported.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional, Sequence

import torch
from basicsr.utils.registry import Registry
from torch import nn

from drward.utils.options import OptionError
from drward.utils.user_modules import import_user_module

#: Rewards by ``type:`` name (the FRM, the pyiqa metrics, and any registered by a user's module).
REWARD_REGISTRY = Registry('reward')


class Reward(nn.Module):
    """Base class of the rewards. Subclasses implement :meth:`score`; trainable ones the four methods below it."""

    #: the default log name: the term is logged as ``l_reward_<name>`` (an option entry's ``name`` overrides it)
    name: str = 'reward'
    #: True when the dynamic update trains this reward (then the methods below :meth:`score` are implemented)
    trainable: bool = False
    #: True when the score depends on the captions
    uses_captions: bool = False
    #: True when the weights are tiny random ones (tests, demos); logs say so
    is_tiny: bool = False
    #: the score-to-loss mapping used when the option entry names none (``RewardLoss``'s ``MAPPINGS``)
    default_mapping: str = 'neg'

    @classmethod
    def from_options(cls, opt: Mapping) -> 'Reward':
        """Build from an option entry's own keys (``type``, ``module`` and the loss's keys removed)."""
        return cls(**dict(opt))

    def score(self, images: torch.Tensor, captions: Optional[Sequence[str]] = None,
              grad: bool = False) -> torch.Tensor:
        """Per-image reward ``r`` (B,), higher = better, of ``images`` (B, 3, H, W) in [0, 1]; with ``grad`` the
        graph reaches the images only."""
        raise NotImplementedError

    def preference_logits(self, img_a: torch.Tensor, img_b: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """(B, 2) logits ``[s_a, s_b]`` of each pair, with gradient to the trainable parameters (trainable only)."""
        raise NotImplementedError(f'{type(self).__name__} is not trainable')

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the dynamic update steps (none for a frozen reward)."""
        return iter(())

    def save_checkpoint(self, path: str) -> None:
        """Write what :meth:`load_checkpoint` reads (trainable only)."""
        raise NotImplementedError(f'{type(self).__name__} is not trainable')

    def load_checkpoint(self, path: str) -> None:
        raise NotImplementedError(f'{type(self).__name__} is not trainable')

    def release_compute_cache(self) -> None:
        """Free reduced-precision casts of the weights (stale after an update)."""

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing in the reward's network, where it has one."""


def import_reward_module(module: str, where: str) -> None:
    """Import ``module``: a dotted module name, or a ``.py`` file path
    (:func:`~drward.utils.user_modules.import_user_module`)."""
    import_user_module(module, f'{where}.module')


def build_reward(opt: Mapping, where: str = 'reward') -> Reward:
    """The reward an option entry names by ``type`` (after importing its ``module``, if any)."""
    opt = dict(opt)
    if opt.get('module'):
        import_reward_module(opt.pop('module'), where)
    opt.pop('module', None)
    kind = opt.pop('type', None)
    if kind is None:
        raise OptionError(f'{where}: no type (a registered reward: {", ".join(sorted(REWARD_REGISTRY.keys()))})')
    if kind not in REWARD_REGISTRY:
        raise OptionError(f'{where}.type: unknown reward {kind!r}; registered: '
                          f'{", ".join(sorted(REWARD_REGISTRY.keys()))} (a reward of your own: name its module '
                          f'with `module:`, docs/rewards.md)')
    reward = REWARD_REGISTRY.get(kind).from_options(opt)
    if not isinstance(reward, Reward):
        raise OptionError(f'{where}.type: {kind} is not a drward Reward')
    return reward
