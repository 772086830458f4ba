"""Wavelet structure loss ``L_DWT`` (docs/design.md §1).

Default (authors' code): ``L_DWT = L1(Yl(Î'), Yl(I_GT'))``, ``Yl`` the low-pass band of a dual-tree complex wavelet
transform, ``pytorch_wavelets.DTCWTForward(J=3, biort='near_sym_b', qshift='qshift_b')``, images in [0, 1].

Option ``mode='dwt'`` (the paper's wording, "DWT"): a plain ``DWTForward(J, wave)`` and a weighted sum of L1
distances over its sub-bands, ``Σ_band w_band · L1(band(Î'), band(I_GT'))`` with bands ``LL`` (the final low-pass)
and ``LH``, ``HL``, ``HH`` (at every level).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from drward.losses.common import INPUT_RANGE, WEIGHT, check_range, to_unit
from drward.utils.option_schema import Choice, Int, MapOf, Num, Text, declare
from drward.utils.registry import register

BANDS = ('LL', 'LH', 'HL', 'HH')


def _wavelets():
    import pytorch_wavelets  # imports pkg_resources; kept lazy so `import drward` stays light
    return pytorch_wavelets


@register(LOSS_REGISTRY)
@declare(loss_weight=(WEIGHT, 'λ_dwt'), reduction=(Choice('mean', 'sum'), 'over the batch'),
         mode=(Choice('dtcwt', 'dwt'), 'dtcwt: low-pass of the dual-tree CWT; dwt: sub-bands of a plain DWT'),
         levels=(Int(1), 'decomposition levels J'), biort=(Text(), 'DT-CWT level-1 filters'),
         qshift=(Text(), 'DT-CWT filters of the other levels'), wave=(Text(), 'DWT wavelet (mode dwt)'),
         band_weights=(MapOf(Num(0), nullable=True), 'weights of LL, LH, HL, HH (mode dwt)'),
         input_range=(INPUT_RANGE, 'of the images'))
class DWTLoss(nn.Module):
    """Args:
        mode: ``'dtcwt'`` (default, low-pass of the dual-tree CWT) or ``'dwt'`` (sub-bands of a plain DWT).
        levels: decomposition levels ``J`` (3).
        biort, qshift: DT-CWT filters (``'near_sym_b'``, ``'qshift_b'``).
        wave: DWT wavelet (``'haar'``).
        band_weights: ``{'LL': w, 'LH': w, 'HL': w, 'HH': w}`` for ``mode='dwt'`` (default: LL 1, others 0).
        input_range: ``'[-1,1]'`` (default) or ``'[0,1]'``; images are mapped to [0, 1] first.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', mode: str = 'dtcwt', levels: int = 3,
                 biort: str = 'near_sym_b', qshift: str = 'qshift_b', wave: str = 'haar',
                 band_weights: Optional[Mapping[str, float]] = None, input_range: str = '[-1,1]'):
        super().__init__()
        if mode not in ('dtcwt', 'dwt'):
            raise ValueError(f"DWTLoss: mode must be 'dtcwt' or 'dwt', got {mode!r}")
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"DWTLoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.loss_weight, self.reduction, self.mode = loss_weight, reduction, mode
        self.input_range = check_range('DWTLoss', input_range)
        pw = _wavelets()
        if mode == 'dtcwt':
            self.transform = pw.DTCWTForward(J=levels, biort=biort, qshift=qshift)
        else:
            self.transform = pw.DWTForward(J=levels, wave=wave, mode='zero')
        weights = {'LL': 1.0, 'LH': 0.0, 'HL': 0.0, 'HH': 0.0}
        unknown = set(band_weights or {}) - set(BANDS)
        if unknown:
            raise ValueError(f'DWTLoss: unknown band(s) {sorted(unknown)}; accepted: {list(BANDS)}')
        weights.update(band_weights or {})
        self.band_weights = weights

    def _l1(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(a, b, reduction=self.reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        images = torch.cat([to_unit(pred, self.input_range), to_unit(target, self.input_range)]).float()
        with torch.autocast(device_type=images.device.type, enabled=False):  # the wavelet filters are float32
            low, highs = self.transform(images)
            return self.loss_weight * self._bands_l1(low, highs, pred.shape[0])

    def _bands_l1(self, low: torch.Tensor, highs, n: int) -> torch.Tensor:
        if self.mode == 'dtcwt':
            return self._l1(low[:n], low[n:])
        loss = self.band_weights['LL'] * self._l1(low[:n], low[n:])
        for high in highs:  # (2B, C, 3, h, w): LH, HL, HH
            for k, band in enumerate(BANDS[1:]):
                if self.band_weights[band]:
                    loss = loss + self.band_weights[band] * self._l1(high[:n, :, k], high[n:, :, k])
        return loss
