"""Reward loss ``L_reward`` of ReFL (paper Eq. for the FRM feedback; DESIGN.md §1).

Default (authors' code): ``L_reward = mean_b(1 − cos(f_img(Î'_b), f_txt(T_b)))`` with the FRM's normalised
features and no temperature, ``Î' = clamp((Î + 1)/2)`` resized to the FRM's input size and CLIP-normalised.

Other score-to-loss mappings (``mapping``):
  * ``'one_minus_cos'``: ``1 − r``                       (authors' default)
  * ``'neg_cos'``:      ``−r``                           (same gradient, different offset)
  * ``'hinge'``:        ``relu(margin − r)``             (ImageReward-style ReFL: stop pushing past the margin)
  * ``'neg_logit'``:    ``−exp(logit_scale)·r``          (the paper's ``s`` with temperature)

The FRM lives here and is shared: ``ReFLModel`` reaches it as ``loss.frm`` for the dynamic FRM update. During the
generator's step the graph carries no gradient into the FRM's weights (``similarity(..., frozen=True)``), only
into the image.

Multi-reward ReFL (``iqa_rewards``, not in the paper): a list of pyiqa no-reference metrics, each with its weight
(:class:`~drward.losses.iqa_reward.IQAReward`), added to the FRM's term:
``L_reward = w_FRM·φ(r_FRM) + Σ_k w_k·L_k``. ``last_terms`` then holds each weighted term, ``l_reward_frm`` and
``l_reward_<name>``, which ReFLModel logs beside ``l_reward`` (the sum, as before). The dynamic FRM update trains
the FRM only; the IQA metrics stay frozen.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from drward.archs.frm_arch import build_frm
from drward.data.face_degradation_dataset import DEFAULT_FALLBACK_CAPTION
from drward.losses.common import check_range, reduce, to_unit
from drward.losses.iqa_reward import IQAReward
from drward.utils.options import checked_options
from drward.utils.registry import register

DEFAULT_CAPTION = DEFAULT_FALLBACK_CAPTION  # the caption the face datasets fall back to
MAPPINGS = ('one_minus_cos', 'neg_cos', 'hinge', 'neg_logit')


@register(LOSS_REGISTRY)
@checked_options
class RewardLoss(nn.Module):
    """``loss_weight · reduce(φ(r))`` with ``r = cos(e_I, e_T)`` from the Face Reward Model.

    Args:
        frm: FaceRewardModel options (``model_name``, ``checkpoint``, ``unlocked_image_groups``, ...).
        mapping: score-to-loss mapping, one of :data:`MAPPINGS`.
        margin: the hinge's margin (``mapping='hinge'``).
        fallback_caption: caption used when a batch brings none.
        input_range: ``'[-1,1]'`` (diffusion outputs, default) or ``'[0,1]'`` (BasicSR SR models).
        iqa_rewards: extra rewards, a list of :class:`~drward.losses.iqa_reward.IQAReward` options (``metric``,
            ``loss_weight``, ...); none by default.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', frm: Optional[Mapping] = None,
                 mapping: str = 'one_minus_cos', margin: float = 1.0, fallback_caption: str = DEFAULT_CAPTION,
                 input_range: str = '[-1,1]', iqa_rewards: Optional[Sequence[Mapping]] = None):
        super().__init__()
        if mapping not in MAPPINGS:
            raise ValueError(f'RewardLoss: mapping must be one of {MAPPINGS}, got {mapping!r}')
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.mapping = mapping
        self.margin = margin
        self.fallback_caption = fallback_caption
        self.input_range = check_range('RewardLoss', input_range)
        self.frm = build_frm(frm)
        self.last_reward: Optional[torch.Tensor] = None
        self.iqa_rewards = nn.ModuleList(IQAReward(opt) for opt in (iqa_rewards or ()))
        names = ['frm'] + [reward.name for reward in self.iqa_rewards]
        if len(set(names)) != len(names):
            raise ValueError(f'RewardLoss: two rewards share a name ({names}): give one a `name`')
        #: the last call's weighted terms by log key (only with iqa_rewards): l_reward_frm, l_reward_<name>, ...
        self.last_terms: Dict[str, torch.Tensor] = OrderedDict()

    def captions_for(self, batch: int, captions: Optional[Sequence[str]]) -> list:
        if captions is None:
            return [self.fallback_caption] * batch
        captions = [c if c else self.fallback_caption for c in captions]
        if len(captions) != batch:
            raise ValueError(f'RewardLoss: {batch} images but {len(captions)} captions')
        return captions

    def score_to_loss(self, reward: torch.Tensor) -> torch.Tensor:
        if self.mapping == 'one_minus_cos':
            return 1 - reward
        if self.mapping == 'neg_cos':
            return -reward
        if self.mapping == 'hinge':
            return torch.relu(self.margin - reward)
        return -self.frm.logit_scale_exp.detach() * reward

    def forward(self, pred: torch.Tensor, target: Optional[torch.Tensor] = None,
                captions: Optional[Sequence[str]] = None, **kwargs) -> torch.Tensor:
        """``pred``: restored images ``Î`` in ``input_range``; ``target`` is unused (no-reference loss)."""
        images = to_unit(pred, self.input_range)
        reward = self.frm.similarity(images, self.captions_for(pred.shape[0], captions), frozen=True)
        self.last_reward = reward.detach()
        loss = self.loss_weight * reduce(self.score_to_loss(reward), self.reduction)
        if not len(self.iqa_rewards):
            return loss
        terms = OrderedDict(l_reward_frm=loss)
        for extra in self.iqa_rewards:
            terms[f'l_reward_{extra.name}'] = extra(images)
        self.last_terms = OrderedDict((key, value.detach()) for key, value in terms.items())
        return sum(terms.values())

    def extra_rewards(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-image rewards (higher = better, no gradient) of each IQA reward, by name: the hack monitor's input."""
        return OrderedDict((extra.name, extra.rewards(images)) for extra in self.iqa_rewards)
