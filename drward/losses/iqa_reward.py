"""No-reference IQA metrics (pyiqa) as extra rewards beside the FRM: a multi-reward ReFL (issue 27, not in the paper).

Each reward ``k`` adds ``w_k · L_k`` to the generator loss with ``L_k = −s_k(Î')`` for a metric where higher is
better and ``L_k = s_k(Î')`` where lower is better (pyiqa's ``lower_better``), ``s_k`` the metric's score of the
restored image ``Î' = clamp((Î + 1)/2)`` in [0, 1], averaged over the batch. Scores keep their own scale (MUSIQ
~0–100, CLIP-IQA and TOPIQ 0–1): choose ``loss_weight`` accordingly.

Only metrics whose pyiqa implementation carries a gradient to the image can be rewards (:data:`DIFFERENTIABLE`,
from pyiqa's source: their networks run on the tensor end to end under ``create_metric(..., as_loss=True)``; MUSIQ
was also checked here: a random-weight MUSIQ gives a finite non-zero input gradient). Others are refused by name:
full-reference metrics (a reward sees no GT), NIQE / BRISQUE / NRQM / PI and the like (hand-made statistics, parts
in NumPy), FID / IS (set-level), Q-Align (a language model under ``no_grad``). ``topiq_nr-face`` is built with
``align_crop_face=False``: pyiqa's face alignment runs through NumPy (no gradient, batch 1); the training faces are
FFHQ-aligned already. On construction every reward is probed once: a metric whose output has no gradient is refused.

Weights come from local files (nothing is downloaded): ``weights_dir`` laid out as pyiqa's cache
(:mod:`drward.weights.pyiqa`), or ``pretrained_model_path`` for the metric's own checkpoint. ``tiny: true``
builds the metric with random weights (``pretrained=False``): plumbing only, named tiny in logs.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Dict, Mapping

import torch

from drward.archs.reward import REWARD_REGISTRY, Reward
from drward.utils.option_schema import ANY, REQUIRED, Bool, Num, Option, Text, declared_options, resolve
from drward.utils.options import MissingWeightsError, OptionError
from drward.utils.registry import register
from drward.weights.pyiqa import local_weights, require_metric_files

#: pyiqa metric → extra options the reward passes to it
DIFFERENTIABLE: Dict[str, Dict] = {
    'musiq': {}, 'musiq-ava': {}, 'musiq-spaq': {}, 'maniqa': {}, 'clipiqa': {}, 'clipiqa+': {},
    'topiq_nr': {}, 'topiq_nr-face': {'align_crop_face': False}, 'laion_aes': {},
}
NOT_DIFFERENTIABLE = {
    'niqe': 'hand-made natural-scene statistics, parts in NumPy', 'ilniqe': 'NumPy statistics',
    'brisque': 'hand-made statistics and an SVR', 'nrqm': 'NumPy features and regression forests',
    'pi': 'built on NRQM and NIQE', 'fid': 'a set-level statistic', 'inception_score': 'a set-level statistic',
    'qalign': 'a language model run under no_grad',
}


def refuse_reason(metric: str) -> str:
    """Why ``metric`` cannot be a reward ('' when it can)."""
    if metric in DIFFERENTIABLE:
        return ''
    reason = NOT_DIFFERENTIABLE.get(metric)
    if reason is None:
        try:
            from pyiqa.default_model_configs import DEFAULT_CONFIGS
            mode = (DEFAULT_CONFIGS.get(metric) or {}).get('metric_mode')
        except ImportError:  # pragma: no cover
            mode = None
        reason = ('a full-reference metric: a reward sees no ground truth' if mode == 'FR'
                  else 'not known to be differentiable in pyiqa' if mode else 'not a pyiqa metric')
    return (f"RewardLoss iqa_rewards: pyiqa metric {metric!r} cannot be a reward ({reason}); differentiable ones: "
            f"{', '.join(DIFFERENTIABLE)}")


@register(REWARD_REGISTRY)
class IQAReward(Reward):
    """One pyiqa no-reference metric as a frozen :class:`~drward.archs.reward.Reward` (``type: IQAReward`` in
    ``train.reward_opt.rewards``, or an entry of the older ``iqa_rewards`` list; see the module docstring)."""

    trainable = False
    default_mapping = 'neg'  # L_k = −r_k = ∓s_k
    options = {
        'metric': Option(Text(), REQUIRED, 'a differentiable pyiqa no-reference metric (DIFFERENTIABLE)'),
        'loss_weight': Option(Num(0), 1.0, 'w_k (the older iqa_rewards form)'),
        'name': Option(Text(), None, 'log name: l_reward_<name> (default: the metric)'),
        'weights_dir': Option(Text(nullable=True), 'weights/iqa', "folder of pyiqa's weight files"),
        'pretrained_model_path': Option(Text(nullable=True), None, 'one weight file instead of weights_dir'),
        'tiny': Option(Bool(), False, 'random weights (tests only)'),
        'options': Option(ANY, None, "extra options of pyiqa's create_metric"),
    }

    @classmethod
    def from_options(cls, opt: Mapping) -> 'IQAReward':
        return cls(opt)

    def __init__(self, opt: Mapping):
        super().__init__()
        opt = resolve('IQAReward', declared_options(type(self)), opt)
        self.metric = str(opt['metric'])
        reason = refuse_reason(self.metric)
        if reason:
            raise OptionError(reason)
        self.tiny = self.is_tiny = bool(opt['tiny'])
        default = f'{self.metric}_tiny' if self.tiny else self.metric
        self.name = re.sub(r'[^A-Za-z0-9]+', '_', str(opt.get('name') or default)).strip('_').lower()
        self.loss_weight = float(opt['loss_weight'])
        self.net = self._build(opt)
        for param in self.net.parameters():
            param.requires_grad_(False)
        self.sign = 1.0 if self.net.lower_better else -1.0
        self._probe()

    def _build(self, opt: Mapping):
        import pyiqa  # heavy optional dependency: imported when a pyiqa reward is built

        options = {**DIFFERENTIABLE[self.metric], **dict(opt.get('options') or {})}
        weights_dir = opt['weights_dir'] or declared_options(IQAReward)['weights_dir'].default
        path = opt.get('pretrained_model_path')
        if self.tiny:
            options['pretrained'] = False
        elif path:
            if not os.path.isfile(path):
                raise MissingWeightsError(f'missing weight file {path} (option key train.reward_opt.iqa_rewards'
                                          f'[{self.metric}].pretrained_model_path)')
            options['pretrained_model_path'] = path
        else:
            require_metric_files(self.metric, weights_dir, f'train.reward_opt.iqa_rewards[{self.metric}].weights_dir')
        with warnings.catch_warnings(), local_weights(weights_dir):
            warnings.simplefilter('ignore')
            return pyiqa.create_metric(self.metric, as_loss=True, loss_reduction='none',
                                       device=torch.device('cpu'), **options)

    def _probe(self) -> None:
        """Refuse a metric whose output carries no gradient to the image (a library change would show here)."""
        image = torch.rand(1, 3, 64, 64, requires_grad=True)
        score = self.scores(image)
        if not score.requires_grad:
            raise OptionError(f'RewardLoss iqa_rewards: pyiqa metric {self.metric!r} returned a score without '
                              'gradient: it cannot be a reward')

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image scores ``s_k`` of images (B, 3, H, W) in [0, 1] (float32, outside autocast)."""
        self.net.to(images.device)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.net(images.float()).reshape(images.shape[0], -1).mean(dim=1)

    def rewards(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image rewards, higher = better (``−s`` for lower-better metrics), without gradient."""
        return self.score(images)

    def score(self, images: torch.Tensor, captions=None, grad: bool = False) -> torch.Tensor:
        """The reward interface's ``r_k = ∓s_k`` (higher = better); captions are not used."""
        if grad:
            return -self.sign * self.scores(images)
        with torch.no_grad():
            return -self.sign * self.scores(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``w_k · L_k`` of images in [0, 1], batch mean."""
        return self.loss_weight * self.sign * self.scores(images).mean()
