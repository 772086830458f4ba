"""Perceptual loss ``L_LPIPS = LPIPS_vgg(Î, I_GT)`` on [-1, 1] inputs (docs/design.md §1), via the ``lpips`` package.

The package ships its calibrated linear layers; the VGG/AlexNet backbone comes from torchvision's weight file, which
cannot be downloaded here. It is read from ``backbone_path`` or from the torch hub cache
(``torch.hub.get_dir()/checkpoints/<file>``), where torchvision would have put it; with neither, construction fails
with one line saying which file to put where. ``random_backbone: true`` is for tests only.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from drward.losses.common import INPUT_RANGE, REDUCTION, WEIGHT, check_range, reduce, to_signed
from drward.utils.option_schema import Bool, Choice, Text, declare
from drward.utils.options import MissingWeightsError
from drward.utils.registry import register
from drward.utils.safe_load import load_weights

BACKBONE_FILES: Dict[str, str] = {
    'vgg': 'vgg16-397923af.pth',
    'alex': 'alexnet-owt-7be5be79.pth',
}
BACKBONE_URLS: Dict[str, str] = {
    'vgg': 'https://download.pytorch.org/models/vgg16-397923af.pth',
    'alex': 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
}


def default_backbone_path(net: str) -> str:
    return os.path.join(torch.hub.get_dir(), 'checkpoints', BACKBONE_FILES[net])


def load_backbone(lpips_net: nn.Module, path: str) -> None:
    """Copy torchvision's ``features.<i>.*`` weights into lpips' ``slice<k>.<i>.*`` modules (same indices)."""
    state = load_weights(path)
    mapped = {}
    for name, _ in lpips_net.named_parameters():
        index_and_param = name.split('.', 1)[1]  # 'slice2.5.weight' -> '5.weight'
        mapped[name] = state[f'features.{index_and_param}']
    lpips_net.load_state_dict(mapped, strict=True)


@register(LOSS_REGISTRY)
@declare(loss_weight=(WEIGHT, 'λ_lpips'), reduction=(REDUCTION, 'over the batch'),
         net=(Choice('vgg', 'alex'), 'LPIPS backbone'),
         backbone_path=(Text(nullable=True), 'torchvision weight file of the backbone (vgg16-397923af.pth)'),
         random_backbone=(Bool(), 'random backbone weights (tests only)'), input_range=(INPUT_RANGE, 'of the images'))
class LPIPSLoss(nn.Module):
    """Args:
        net: ``'vgg'`` (authors' choice) or ``'alex'``.
        backbone_path: local torchvision backbone file; default: the torch hub cache location.
        random_backbone: random backbone weights — tests only (the value is then meaningless).
        input_range: ``'[-1,1]'`` (default) or ``'[0,1]'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', net: str = 'vgg',
                 backbone_path: Optional[str] = None, random_backbone: bool = False, input_range: str = '[-1,1]'):
        super().__init__()
        import lpips
        if net not in BACKBONE_FILES:
            raise ValueError(f'LPIPSLoss: net must be one of {sorted(BACKBONE_FILES)}, got {net!r}')
        self.loss_weight, self.reduction = loss_weight, reduction
        self.input_range = check_range('LPIPSLoss', input_range)
        self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if random_backbone:
            get_root_logger().warning('LPIPSLoss: RANDOM backbone (tests only): values are not LPIPS')
        else:
            path = backbone_path or default_backbone_path(net)
            if not os.path.exists(path):
                raise MissingWeightsError(
                    f'missing weight file {path} (option key lpips_opt.backbone_path); official file: '
                    f'{BACKBONE_URLS[net]} — put it there or set backbone_path')
            load_backbone(self.model.net, path)
        self.model.eval().requires_grad_(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        dist = self.model(to_signed(pred, self.input_range), to_signed(target, self.input_range))
        return self.loss_weight * reduce(dist.flatten(), self.reduction)
