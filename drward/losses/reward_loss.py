"""Reward loss ``L_reward`` of ReFL (the paper's FRM feedback; docs/method.md), over one or several rewards.

``L_reward = Σ_k w_k · reduce_b(φ_k(r_k(Î'_b, T_b)))``, with ``r_k`` the score of reward ``k`` (a
:class:`~drward.archs.reward.Reward`: the FRM, a pyiqa metric, a user's own), ``w_k`` its ``loss_weight``, ``φ_k`` its
score-to-loss mapping and ``Î' = clamp((Î + 1)/2)`` the restored image in [0, 1]. Authors' default, the FRM alone:
``L_reward = mean_b(1 − cos(f_img(Î'_b), f_txt(T_b)))`` with normalised features and no temperature.

Mappings ``φ`` (``mapping``, per reward; default the reward's ``default_mapping``):
  * ``'one_minus_cos'``: ``1 − r``                       (authors' default for the FRM)
  * ``'neg_cos'``, ``'neg'``: ``−r``                     (same gradient, different offset; pyiqa rewards' default)
  * ``'hinge'``:        ``relu(margin − r)``             (ImageReward-style ReFL: stop pushing past the margin)
  * ``'neg_logit'``:    ``−exp(logit_scale)·r``          (the paper's ``s`` with temperature; the FRM only)

Options. The list form: ``rewards: [{type: FaceRewardModel, loss_weight: 1.0, model_name: tiny}, {type: IQAReward,
metric: musiq, loss_weight: 0.01}, {type: MyReward, module: my_lab/rewards.py, loss_weight: 0.1}]`` (each entry:
``type``, ``loss_weight``, optional ``name``, ``mapping``, ``margin``, ``module``, then the reward's own keys), where
``RewardLoss``'s own ``loss_weight`` multiplies the sum. The older form maps onto it: ``frm`` (+ ``mapping``,
``margin``, ``loss_weight``) is the entry ``{type: FaceRewardModel, **frm}`` weighted ``loss_weight``, and each
``iqa_rewards`` entry an ``IQAReward`` with its own weight (multi-reward ReFL, not in the paper).

During the generator's step no gradient reaches a reward's weights (``score(..., grad=True)``), only the image.
With more than one reward, ``last_terms`` holds each weighted term, ``l_reward_<name>``, which the models log beside
``l_reward`` (the sum). At most one reward may be trainable: the dynamic update trains it
(:attr:`RewardLoss.trained`); :attr:`RewardLoss.primary` (the trainable one, else the first) gives
``reward_restored``, ``reward_gt`` and the hack monitor's ``hack_reward_gap``; the others give
``hack_reward_gap_<name>``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from drward.archs.frm_arch import FaceRewardModel
from drward.archs.reward import REWARD_REGISTRY, Reward, build_reward
from drward.losses.common import INPUT_RANGE, REDUCTION, WEIGHT, check_range, reduce, to_unit
from drward.losses.iqa_reward import IQAReward
from drward.utils.captions import DEFAULT_FALLBACK_CAPTION
from drward.utils.option_schema import ByRegistry, Choice, ListOf, Num, Option, Text, declare, declared_options, group
from drward.utils.options import OptionError
from drward.utils.registry import register

DEFAULT_CAPTION = DEFAULT_FALLBACK_CAPTION  # the caption the face datasets fall back to
MAPPINGS = ('one_minus_cos', 'neg_cos', 'neg', 'hinge', 'neg_logit')
#: Keys of every ``rewards`` entry beside the reward's own (its class's ``options``): the loss's, and ``module``.
ENTRY_OPTIONS = {
    'module': Option(Text(), None, "a user's module (dotted name or .py file) imported first, so its reward registers"),
    'loss_weight': Option(WEIGHT, 1.0, 'w_k'),
    'name': Option(Text(), None, "log name: l_reward_<name> (default: the reward's)"),
    'mapping': Option(Choice(*MAPPINGS), None, "φ_k, the score-to-loss mapping (default: the reward's)"),
    'margin': Option(Num(), None, "the hinge's margin (default: the loss's margin)"),
}
#: Keys of a ``rewards`` entry that belong to the loss, not to the reward it builds.
ENTRY_KEYS = tuple(key for key in ENTRY_OPTIONS if key != 'module')


def legacy_entries(loss_weight: float, frm: Optional[Mapping], mapping: Optional[str], margin: float,
                   iqa_rewards: Optional[Sequence[Mapping]]) -> List[Dict]:
    """The ``rewards`` list the older options (``frm``, ``mapping``, ``margin``, ``iqa_rewards``) stand for."""
    entries = [{'type': 'FaceRewardModel', 'loss_weight': loss_weight, 'mapping': mapping or 'one_minus_cos',
                'margin': margin, **{k: v for k, v in dict(frm or {}).items() if k != 'type'}}]
    for opt in iqa_rewards or ():
        entries.append({'type': 'IQAReward', **dict(opt)})
    return entries


@register(LOSS_REGISTRY)
@declare(loss_weight=(WEIGHT, 'λ_reward: multiplies the sum (the older form: the FRM term)'),
         reduction=(REDUCTION, 'over the batch'),
         frm=(group(declared_options(FaceRewardModel)), "the older form's FaceRewardModel options"),
         mapping=(Choice(*MAPPINGS, nullable=True), "the older form's FRM mapping"),
         margin=(Num(), "the hinge's margin (mapping: hinge)"),
         fallback_caption=(Text(), 'the caption used when a batch brings none'),
         input_range=(INPUT_RANGE, '[-1,1] (diffusion outputs) or [0,1] (BasicSR SR models)'),
         iqa_rewards=(ListOf(group(declared_options(IQAReward), nullable=False), nullable=True),
                      "the older form's extra pyiqa rewards"),
         rewards=(ListOf(ByRegistry(REWARD_REGISTRY, ENTRY_OPTIONS), nullable=True),
                  'the reward entries: type (a registered Reward), its own keys, and ENTRY_OPTIONS'))
class RewardLoss(nn.Module):
    """``Σ_k w_k · reduce(φ_k(r_k))`` over the rewards (see the module docstring).

    Args:
        rewards: the reward entries (``type``, ``loss_weight``, ...); when given, ``loss_weight`` multiplies the sum.
        frm: the older form's FaceRewardModel options (``model_name``, ``checkpoint``, ...), weighted ``loss_weight``.
        mapping: the older form's FRM mapping, one of :data:`MAPPINGS`.
        margin: the hinge's margin (``mapping='hinge'``).
        fallback_caption: caption used when a batch brings none.
        input_range: ``'[-1,1]'`` (diffusion outputs, default) or ``'[0,1]'`` (BasicSR SR models).
        iqa_rewards: the older form's extra rewards, :class:`~drward.losses.iqa_reward.IQAReward` options.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', frm: Optional[Mapping] = None,
                 mapping: Optional[str] = None, margin: float = 1.0, fallback_caption: str = DEFAULT_CAPTION,
                 input_range: str = '[-1,1]', iqa_rewards: Optional[Sequence[Mapping]] = None,
                 rewards: Optional[Sequence[Mapping]] = None):
        super().__init__()
        if rewards and (frm or iqa_rewards or mapping):
            raise OptionError('RewardLoss: give either rewards (a list) or the older frm / mapping / iqa_rewards')
        self.reduction = reduction
        self.fallback_caption = fallback_caption
        self.input_range = check_range('RewardLoss', input_range)
        if rewards:
            entries, self.loss_weight = [dict(entry) for entry in rewards], float(loss_weight)
        else:
            entries, self.loss_weight = legacy_entries(loss_weight, frm, mapping, margin, iqa_rewards), 1.0
        built, self.weights, self.mappings, self.margins, self.names = [], [], [], [], []
        for i, entry in enumerate(entries):
            where = f'RewardLoss rewards[{i}]'
            reward = build_reward({k: v for k, v in entry.items() if k not in ENTRY_KEYS}, where)
            chosen = entry.get('mapping') or reward.default_mapping
            if chosen not in MAPPINGS:
                raise OptionError(f'{where}.mapping: must be one of {MAPPINGS}, got {chosen!r}')
            if chosen == 'neg_logit' and not hasattr(reward, 'logit_scale_exp'):
                raise OptionError(f'{where}.mapping: neg_logit needs a reward with a temperature (the FRM)')
            built.append(reward)
            entry = {**{k: v.default for k, v in ENTRY_OPTIONS.items()}, **entry}
            self.weights.append(float(entry['loss_weight']))
            self.mappings.append(chosen)
            self.margins.append(float(margin if entry['margin'] is None else entry['margin']))
            self.names.append(re.sub(r'[^A-Za-z0-9]+', '_', str(entry.get('name') or reward.name)).strip('_').lower())
        self.rewards = nn.ModuleList(built)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f'RewardLoss: two rewards share a name ({self.names}): give one a `name`')
        trainable = [i for i, reward in enumerate(built) if reward.trainable]
        if len(trainable) > 1:
            raise OptionError(f'RewardLoss: {len(trainable)} trainable rewards ({[self.names[i] for i in trainable]}); '
                              'the dynamic update trains one')
        #: the trainable reward (the dynamic update trains it), or None
        self.trained: Optional[Reward] = built[trainable[0]] if trainable else None
        self._primary = trainable[0] if trainable else 0
        #: the primary reward's per-image score in the last call (no gradient): ``reward_restored``
        self.last_reward: Optional[torch.Tensor] = None
        #: the last call's weighted terms by log key (only with several rewards): l_reward_frm, l_reward_<name>, ...
        self.last_terms: Dict[str, torch.Tensor] = OrderedDict()

    @property
    def primary(self) -> Reward:
        """The reward ``reward_restored`` / ``reward_gt`` and the hack monitor's ``hack_reward_gap`` use."""
        return self.rewards[self._primary]

    @property
    def frm(self) -> Optional[Reward]:
        """The older name of the trainable reward (the FRM)."""
        return self.trained

    @property
    def iqa_rewards(self) -> nn.ModuleList:
        """The pyiqa rewards among :attr:`rewards` (the older ``iqa_rewards``)."""
        return nn.ModuleList(r for r in self.rewards if isinstance(r, IQAReward))

    def captions_for(self, batch: int, captions: Optional[Sequence[str]]) -> list:
        if captions is None:
            return [self.fallback_caption] * batch
        captions = [c if c else self.fallback_caption for c in captions]
        if len(captions) != batch:
            raise ValueError(f'RewardLoss: {batch} images but {len(captions)} captions')
        return captions

    def score_to_loss(self, reward: torch.Tensor, index: int = 0) -> torch.Tensor:
        """``φ_k(r)`` of reward ``index``."""
        mapping = self.mappings[index]
        if mapping == 'one_minus_cos':
            return 1 - reward
        if mapping in ('neg_cos', 'neg'):
            return -reward
        if mapping == 'hinge':
            return torch.relu(self.margins[index] - reward)
        return -self.rewards[index].logit_scale_exp.detach() * reward

    def forward(self, pred: torch.Tensor, target: Optional[torch.Tensor] = None,
                captions: Optional[Sequence[str]] = None, **kwargs) -> torch.Tensor:
        """``pred``: restored images ``Î`` in ``input_range``; ``target`` is unused (no-reference loss)."""
        images = to_unit(pred, self.input_range)
        captions = self.captions_for(pred.shape[0], captions)
        terms = OrderedDict()
        for index, (name, reward) in enumerate(zip(self.names, self.rewards)):
            score = reward.score(images, captions, grad=True)
            if index == self._primary:
                self.last_reward = score.detach()
            loss = reduce(self.score_to_loss(score, index), self.reduction)
            terms[f'l_reward_{name}'] = self.loss_weight * self.weights[index] * loss
        if len(terms) > 1:
            self.last_terms = OrderedDict((key, value.detach()) for key, value in terms.items())
        return sum(terms.values())

    def extra_rewards(self, images: torch.Tensor, captions: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """Per-image rewards (higher = better, no gradient) of every reward but the primary one, by name: the hack
        monitor's input. ``images`` in [0, 1]."""
        captions = self.captions_for(images.shape[0], captions)
        return OrderedDict((name, reward.score(images, captions)) for i, (name, reward)
                           in enumerate(zip(self.names, self.rewards)) if i != self._primary)
