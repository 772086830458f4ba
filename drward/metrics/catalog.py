"""What a results table needs to know about each metric type: its column label, direction, and how it is called.

``per_image`` metrics are BasicSR-style ``f(img, img2, **opts)`` calls averaged over a set; ``set_level`` ones
(FID) are called once with folders. ``needs_gt`` metrics are skipped (``n/a (no ground truth)``) on sets without GT.
Metric types not listed here (any BasicSR metric) get their option name as label and ``better`` from the options.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from drward.metrics.face_metric import ids_direction
from drward.utils.registry import base_name


@dataclass(frozen=True)
class MetricInfo:
    label: str
    better: str = 'higher'
    needs_gt: bool = True
    set_level: bool = False


CATALOG = {
    'calculate_psnr': MetricInfo('PSNR'),
    'calculate_ssim': MetricInfo('SSIM'),
    'calculate_niqe': MetricInfo('NIQE', 'lower', needs_gt=False),
    'calculate_lpips': MetricInfo('LPIPS', 'lower'),
    'calculate_ids': MetricInfo('IDS'),
    'calculate_lmd': MetricInfo('LMD', 'lower'),
    'calculate_fid': MetricInfo('FID', 'lower', needs_gt=False, set_level=True),
    'calculate_musiq': MetricInfo('MUSIQ', needs_gt=False),
    'calculate_maniqa': MetricInfo('MANIQA', needs_gt=False),
    'calculate_clipiqa': MetricInfo('CLIPIQA', needs_gt=False),
    'calculate_aesthetic': MetricInfo('Aesthetic', needs_gt=False),
    'calculate_pyiqa': MetricInfo('pyiqa', needs_gt=False),
    'calculate_frm_reward': MetricInfo('FRM reward', needs_gt=False),
}
_PYIQA_FULL_REFERENCE = ('psnr', 'psnry', 'ssim', 'ssimc', 'ms_ssim', 'lpips', 'lpips-vgg', 'dists', 'fsim', 'vif')


def metric_info(name: str, opts: Mapping[str, Any]) -> MetricInfo:
    """The table facts of the metric called ``name`` in ``val.metrics`` with options ``opts`` (``type`` included)."""
    kind = base_name(opts.get('type', ''))  # calculate_x_drward (a host owns calculate_x) is calculate_x
    base = CATALOG.get(kind, MetricInfo(name))
    label, needs_gt = base.label, base.needs_gt
    better = base.better
    if kind == 'calculate_ids':
        measure = opts.get('measure', 'angle')
        label, better = f'IDS ({measure})', ids_direction(measure)
    elif kind == 'calculate_pyiqa':
        pyiqa_name = opts.get('metric', 'musiq')
        label, needs_gt = pyiqa_name.upper(), pyiqa_name in _PYIQA_FULL_REFERENCE
    elif kind == 'calculate_fid':
        reference = opts.get('ref_folder') or opts.get('reference', 'ffhq')
        needs_gt = reference == 'gt'
    better = opts.get('better') or better
    return MetricInfo(label, better, needs_gt, base.set_level)
