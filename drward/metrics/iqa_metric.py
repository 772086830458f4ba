"""Image-quality metrics in BasicSR's METRIC_REGISTRY: LPIPS, MUSIQ, MANIQA, CLIPIQA, Aesthetic (LAION), FID.

Per-image metrics follow BasicSR's convention, ``calculate_x(img, img2, **options) -> float`` with HWC uint8 BGR
images (``img`` restored, ``img2`` ground truth; no-reference metrics ignore ``img2``). PSNR and SSIM are BasicSR's
own ``calculate_psnr`` / ``calculate_ssim`` (already registered): option files use them directly.

* ``calculate_lpips`` — LPIPS (Zhang et al. 2018) ``d(x, y) = Σ_l mean_hw ‖w_l ⊙ (φ̂_l(x) − φ̂_l(y))‖²`` through
  drward's :class:`~drward.losses.lpips_loss.LPIPSLoss` (the ``lpips`` package's calibrated layers; ``net: alex``
  by default, as pyiqa's ``lpips``); backbone file ``<weights_dir>/checkpoints/<torchvision file>``.
* ``calculate_musiq`` / ``calculate_maniqa`` / ``calculate_clipiqa`` / ``calculate_aesthetic`` — pyiqa's ``musiq``
  (KonIQ), ``maniqa`` (KonIQ), ``clipiqa`` and ``laion_aes``; ``calculate_pyiqa`` takes any pyiqa name.
* ``calculate_fid`` — a *set-level* metric: Fréchet distance ``‖μ_1 − μ_2‖² + Tr(Σ_1 + Σ_2 − 2(Σ_1Σ_2)^{1/2})`` of
  Inception features of a folder of restorations against a reference folder or FFHQ's statistics (clean-fid).
  FaceTestModel calls it once per dataset with folders.

Weights come from a local folder (``weights_dir``, see :mod:`drward.weights.pyiqa`); a missing file raises
:class:`~drward.utils.options.MissingWeightsError` naming it, which FaceTestModel turns into ``n/a`` in the table.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from drward.losses.lpips_loss import BACKBONE_FILES, LPIPSLoss
from drward.metrics.metric_utils import bgr_to_tensor, built_once, check_better, resolve_device  # noqa: F401
from drward.utils.options import check_keys
from drward.utils.registry import register, register_object
from drward.weights.pyiqa import create_pyiqa_metric, default_weights_dir, local_weights, require_metric_files

LPIPS_NETS = ('alex', 'vgg')
FID_FFHQ = 'ffhq'


def _lpips_model(net: str, weights_dir: str, device: str, random_backbone: bool):
    if net not in LPIPS_NETS:
        raise ValueError(f'calculate_lpips: net must be one of {LPIPS_NETS}, got {net!r}')
    if not random_backbone:
        require_metric_files(f'lpips_{net}', weights_dir, 'val.metrics.<lpips>.weights_dir')
    path = os.path.join(weights_dir, 'checkpoints', BACKBONE_FILES[net])
    return LPIPSLoss(net=net, backbone_path=path, random_backbone=random_backbone, input_range='[0,1]').to(device)


@register(METRIC_REGISTRY)
def calculate_lpips(img: np.ndarray, img2: np.ndarray, net: str = 'alex', weights_dir: Optional[str] = None,
                    device: str = 'auto', random_backbone: bool = False, better: str = 'lower', **unknown) -> float:
    """LPIPS distance between the restored ``img`` and the ground truth ``img2`` (lower is better)."""
    check_keys('calculate_lpips', unknown, ('net', 'weights_dir', 'device', 'random_backbone', 'better'))
    check_better('calculate_lpips', better)
    weights_dir, device = weights_dir or default_weights_dir(), resolve_device(device)
    model = built_once('lpips', dict(net=net, weights_dir=weights_dir, device=device, random=random_backbone),
                       lambda: _lpips_model(net, weights_dir, device, random_backbone))
    with torch.no_grad():
        return float(model(bgr_to_tensor(img).to(device), bgr_to_tensor(img2).to(device)))


def _pyiqa_score(name: str, img: np.ndarray, img2: Optional[np.ndarray], weights_dir: Optional[str], device: str,
                 pretrained: bool) -> float:
    weights_dir, device = weights_dir or default_weights_dir(), resolve_device(device)
    metric = built_once(f'pyiqa:{name}', dict(weights_dir=weights_dir, device=device, pretrained=pretrained),
                        lambda: create_pyiqa_metric(name, weights_dir, f'val.metrics.<{name}>.weights_dir', device,
                                                    pretrained))
    with torch.no_grad():
        if metric.metric_mode == 'FR':
            score = metric(bgr_to_tensor(img).to(device), bgr_to_tensor(img2).to(device))
        else:
            score = metric(bgr_to_tensor(img).to(device))
    return float(score.mean() if torch.is_tensor(score) else score)


_PYIQA_KEYS = ('weights_dir', 'device', 'pretrained', 'better')


@register(METRIC_REGISTRY)
def calculate_pyiqa(img: np.ndarray, img2: Optional[np.ndarray] = None, metric: str = 'musiq',
                    weights_dir: Optional[str] = None, device: str = 'auto', pretrained: bool = True,
                    better: Optional[str] = None, **unknown) -> float:
    """Any pyiqa metric by name (``metric``); full-reference ones compare ``img`` with ``img2``."""
    check_keys('calculate_pyiqa', unknown, ('metric',) + _PYIQA_KEYS)
    check_better('calculate_pyiqa', better)
    return _pyiqa_score(metric, img, img2, weights_dir, device, pretrained)


def _no_reference(name: str, owner: str):
    def calculate(img: np.ndarray, img2: Optional[np.ndarray] = None, weights_dir: Optional[str] = None,
                  device: str = 'auto', pretrained: bool = True, better: str = 'higher', **unknown) -> float:
        check_keys(owner, unknown, _PYIQA_KEYS)
        check_better(owner, better)
        return _pyiqa_score(name, img, None, weights_dir, device, pretrained)

    calculate.__name__ = calculate.__qualname__ = owner
    calculate.__doc__ = (f"pyiqa's ``{name}`` score of the restored ``img`` (no reference; higher is better). "
                         '``pretrained: false`` builds random weights (tests only).')
    register_object(METRIC_REGISTRY, calculate)
    return calculate


calculate_musiq = _no_reference('musiq', 'calculate_musiq')
calculate_maniqa = _no_reference('maniqa', 'calculate_maniqa')
calculate_clipiqa = _no_reference('clipiqa', 'calculate_clipiqa')
calculate_aesthetic = _no_reference('laion_aes', 'calculate_aesthetic')


@register(METRIC_REGISTRY)
def calculate_fid(img_folder: str = None, ref_folder: Optional[str] = None, reference: str = FID_FFHQ,
                  weights_dir: Optional[str] = None, device: str = 'auto', better: str = 'lower', **unknown) -> float:
    """FID of the images in ``img_folder`` against ``ref_folder`` (or ``reference: ffhq`` → FFHQ 512 clean stats).

    Set-level: FaceTestModel calls it once per dataset (``reference: gt`` there means the dataset's GT folder).
    """
    if 'img' in unknown or img_folder is None:
        raise TypeError('calculate_fid is a set-level metric: call it with img_folder (FaceTestModel does this), '
                        'not per image')
    check_keys('calculate_fid', unknown, ('ref_folder', 'reference', 'weights_dir', 'device', 'better'))
    check_better('calculate_fid', better)
    weights_dir, device = weights_dir or default_weights_dir(), resolve_device(device)
    if ref_folder is None:
        if reference != FID_FFHQ:
            raise ValueError(f"calculate_fid: give ref_folder, or reference: '{FID_FFHQ}' (got {reference!r})")
        require_metric_files('fid_ffhq_stats', weights_dir, 'val.metrics.<fid>.weights_dir')
    metric = built_once('pyiqa:fid', dict(weights_dir=weights_dir, device=device),
                        lambda: create_pyiqa_metric('fid', weights_dir, 'val.metrics.<fid>.weights_dir', device))
    with local_weights(weights_dir), torch.no_grad():
        if ref_folder is not None:
            return float(metric(img_folder, ref_folder, num_workers=0, verbose=False))
        return float(metric(img_folder, dataset_name='FFHQ', dataset_res=512, dataset_split='trainval70k',
                            num_workers=0, verbose=False))
