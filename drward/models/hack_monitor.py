"""Reward-hacking monitor: does the generator beat the ground truth under the FRM, or add high frequencies?

Two numbers, measured on a batch of restored faces ``Î`` and their ground truth ``I_GT`` (both in [0, 1]):

* ``hack_reward_gap = mean_b r(Î_b) − mean_b r(I_GT_b)`` with ``r`` the primary reward's score
  (:meth:`drward.archs.reward.Reward.score`; the FRM's ``r = cos(e_I, e_T)``) under the **current** reward (the
  one the dynamic update has just trained, not the reward of the generator's step). Above 0 the generator scores
  higher than the ground truth: the reward is being gamed, since no restoration can be better than its target.
* ``hack_hf_ratio = Σ_b E_HF(Î_b) / Σ_b E_HF(I_GT_b)`` with ``E_HF(I) = Σ_{j,d} Σ |h_{j,d}|² / (C·H·W)``, the
  energy of the high-pass bands ``h_{j,d}`` (levels j = 1..J, six orientations d) of a dual-tree complex wavelet
  transform (``pytorch_wavelets.DTCWTForward``, the filters ``DWTLoss`` uses). Restorers regress towards smooth
  outputs (ratio ≤ 1); the acne-like artefacts users report after ReFL are high-frequency energy the GT lacks.

A warning names the iteration at which either value has stayed above its threshold for ``patience`` consecutive
logs (counted per stream: training log steps, and each validation set). Defaults (``train.hack_monitor``):

* ``gap_threshold: 0.0`` — the definition above: any sustained positive gap is the generator out-scoring the truth;
* ``hf_ratio_threshold: 1.5`` — 50 % more high-frequency energy than the GT. Measured on the 16 demo faces at 64²:
  white noise of σ = 5/255 gives 1.04, σ = 10/255 1.16, σ = 15/255 (the paper's strongest degradation noise)
  1.36, an unsharp mask of amount 1 (strong sharpening) 1.52, a 3×3 box blur 0.65 (``tests/test_hack_monitor.py``
  checks the ordering). The default fires on added detail beyond the strongest noise the degradations use;
* ``patience: 3`` — one log can be a noisy batch; three in a row is a trend.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from basicsr.utils import get_root_logger
from torch import nn

from drward.utils.option_schema import Bool, Int, Num, Option, resolve

#: (log key, option holding its threshold)
WATCHED = (('hack_reward_gap', 'gap_threshold'), ('hack_hf_ratio', 'hf_ratio_threshold'))


class HighFrequencyEnergy(nn.Module):
    """``E_HF(I)`` per image: the DT-CWT high-pass energy per pixel and channel, images (B, C, H, W) in [0, 1]."""

    def __init__(self, levels: int = 3, biort: str = 'near_sym_b', qshift: str = 'qshift_b'):
        super().__init__()
        from pytorch_wavelets import DTCWTForward  # imports pkg_resources; kept lazy, as DWTLoss does
        self.transform = DTCWTForward(J=levels, biort=biort, qshift=qshift)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach().float()
        with torch.autocast(device_type=images.device.type, enabled=False):  # the wavelet filters are float32
            _, highs = self.transform.to(images.device)(images)
        energy = sum(h.pow(2).flatten(1).sum(dim=1) for h in highs)  # |re|² + |im|² over every coefficient
        return energy / images[0].numel()


class HackStats:
    """Running sums over batches, so validation reports one value per set (a ratio of sums, not a mean of ratios)."""

    def __init__(self) -> None:
        self.sums: Dict[str, float] = OrderedDict(reward_restored=0.0, reward_gt=0.0, hf_restored=0.0, hf_gt=0.0)
        self.count = 0

    def add(self, reward, hf: HighFrequencyEnergy, restored: torch.Tensor, gt: torch.Tensor,
            captions: Sequence[str]) -> None:
        """Add a batch: ``reward`` is a :class:`~drward.archs.reward.Reward` (scored without gradient)."""
        restored, gt = restored.detach().float().clamp(0, 1), gt.detach().float().clamp(0, 1)
        n = restored.shape[0]
        with torch.no_grad():  # one reward call and one DT-CWT for both halves, one read of the four sums
            rewards = reward.score(torch.cat([restored, gt]), list(captions) * 2).float()
            energy = hf(torch.cat([restored, gt])).float()
        sums = torch.stack([rewards[:n].sum(), rewards[n:].sum(), energy[:n].sum(), energy[n:].sum()]).tolist()
        for key, value in zip(('reward_restored', 'reward_gt', 'hf_restored', 'hf_gt'), sums):
            self.sums[key] += value
        self.count += restored.shape[0]

    def result(self) -> Dict[str, float]:
        """``reward_restored``, ``reward_gt`` (means), ``hack_reward_gap`` and ``hack_hf_ratio``."""
        n, s = max(self.count, 1), self.sums
        out = OrderedDict(reward_restored=s['reward_restored'] / n, reward_gt=s['reward_gt'] / n)
        out['hack_reward_gap'] = out['reward_restored'] - out['reward_gt']
        out['hack_hf_ratio'] = s['hf_restored'] / s['hf_gt'] if s['hf_gt'] > 0 else float('nan')
        return out


class HackMonitor:
    """Measures :class:`HackStats` and warns when a value stays above its threshold for ``patience`` logs.

    Args:
        opt: ``train.hack_monitor`` options, declared in :attr:`options` (the defaults are explained in the module
            docstring).
        owner: the model's name, for the warning.
        logger_opt: the option file's ``logger`` section: training values are measured every ``print_freq``
            iterations, the steps BasicSR logs (every iteration when absent).
    """

    #: ``train.hack_monitor`` (docs/design.md §3).
    options = {
        'enabled': Option(Bool(), True, 'measure and warn'),
        'gap_threshold': Option(Num(), 0.0, 'warn when hack_reward_gap stays above it'),
        'hf_ratio_threshold': Option(Num(0, lo_open=True), 1.5, 'warn when hack_hf_ratio stays above it'),
        'patience': Option(Int(1), 3, 'consecutive logs above a threshold before the warning'),
        'levels': Option(Int(1), 3, 'DT-CWT levels J of the high-frequency energy'),
    }

    def __init__(self, opt: Optional[Mapping] = None, owner: str = 'model', logger_opt: Optional[Mapping] = None):
        opt = resolve(f'{owner} train.hack_monitor', self.options, opt, ignore=())
        self.enabled = opt['enabled']
        self.thresholds = {key: float(opt[name]) for key, name in WATCHED}
        self.patience = opt['patience']
        self.hf = HighFrequencyEnergy(opt['levels'])
        self.owner = owner
        self.log_every = max(int((logger_opt or {}).get('print_freq', 1)), 1)
        self.runs: Dict[Tuple[str, str], int] = {}
        #: every warning given: (iteration, stream, key, value)
        self.alarms: List[Tuple[int, str, str, float]] = []

    def measure(self, reward, restored: torch.Tensor, gt: torch.Tensor, captions: Sequence[str],
                extra_rewards: Optional[Callable[..., Mapping[str, torch.Tensor]]] = None
                ) -> Dict[str, float]:
        """The two ``hack_`` values of one batch under ``reward`` (a Reward) as it is now; with ``extra_rewards`` (a
        multi-reward run's ``RewardLoss.extra_rewards``: (images, captions) → per-image rewards by name, higher =
        better) also ``hack_reward_gap_<name> = mean r_k(Î) − mean r_k(I_GT)`` for each, checked against
        ``gap_threshold``."""
        stats = HackStats()
        stats.add(reward, self.hf, restored, gt, captions)
        values = OrderedDict((k, v) for k, v in stats.result().items() if k.startswith('hack_'))
        if extra_rewards is not None:
            on_gt = extra_rewards(gt.detach().float().clamp(0, 1), captions)
            for name, value in extra_rewards(restored.detach().float().clamp(0, 1), captions).items():
                values[f'hack_reward_gap_{name}'] = float(value.mean() - on_gt[name].mean())
        return values

    def check(self, values: Mapping[str, float], current_iter: int, stream: str = 'train') -> None:
        """Count consecutive logs above threshold per (stream, value); warn when a count reaches ``patience``."""
        extra = {key: self.thresholds['hack_reward_gap'] for key in values if key.startswith('hack_reward_gap_')}
        for key, threshold in {**self.thresholds, **extra}.items():
            if key not in values:
                continue
            above = values[key] > threshold
            run = self.runs.get((stream, key), 0) + 1 if above else 0
            self.runs[(stream, key)] = run
            if run == self.patience:
                self.alarms.append((current_iter, stream, key, float(values[key])))
                get_root_logger().warning(
                    f'{self.owner}: possible reward hacking at iter {current_iter} ({stream}): {key} = '
                    f'{values[key]:.4f} > {threshold:g} for {self.patience} consecutive logs')

    def due(self, current_iter: int) -> bool:
        """True at the training steps the monitor measures (every ``print_freq``; never when disabled)."""
        return self.enabled and current_iter % self.log_every == 0

    def check_step(self, log: Mapping[str, float], current_iter: int) -> None:
        """:meth:`check` on the training stream, at the steps that measured (a multi-process model averages the
        ranks' values first)."""
        if self.due(current_iter):
            self.check(log, current_iter)

    def log_step(self, reward, restored: torch.Tensor, gt: torch.Tensor, captions: Sequence[str],
                 current_iter: int, extra_rewards: Optional[Callable[..., Mapping[str, torch.Tensor]]] = None
                 ) -> Dict[str, float]:
        """At log steps, :meth:`measure` then :meth:`check` on the training stream; the values go into the model's
        log dict (so to the console, the tb logger and the training curves). Other steps: nothing."""
        if not self.due(current_iter):
            return {}
        values = self.measure(reward, restored, gt, captions, extra_rewards)
        self.check(values, current_iter)
        return values
