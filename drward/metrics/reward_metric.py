"""The FRM's reward of a restored face as a test metric (``calculate_frm_reward``), so a reward gain sits in the same
``tools/test.py`` / ``tools/compare_runs.py`` table as PSNR.

Per image (BasicSR's ``calculate_x(img, img2, **options)``, HWC uint8 BGR; ``img2`` unused): the reward the generator
is trained on, ``r = cos(e_I, e_T)`` of the FRM's normalised image and caption features (HPS v2's score, docs/design.md
§1 "Face Reward Model"), with one caption for every face (``caption``, the datasets' fallback caption by default).
``checkpoint``: the FRM to judge with (an official ``FaceRewardModel.pth`` or a run's ``net_frm_<iter>.pth``);
``model_name: tiny`` builds the tiny CLIP (tests, tiny benchmarks: give it a checkpoint, or it is random).
Higher is better.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from drward.archs.frm_arch import build_frm
from drward.metrics.metric_utils import bgr_to_tensor, built_once, check_better, resolve_device
from drward.utils.options import check_keys
from drward.utils.registry import register

DEFAULT_CAPTION = 'a high-quality photo of a face'


def _frm(model_name: str, checkpoint: Optional[str], device: str):
    return build_frm({'model_name': model_name, 'checkpoint': checkpoint}).to(device).eval()


@register(METRIC_REGISTRY)
def calculate_frm_reward(img: np.ndarray, img2: Optional[np.ndarray] = None, model_name: str = 'ViT-H-14',
                         checkpoint: Optional[str] = None, caption: str = DEFAULT_CAPTION, device: str = 'auto',
                         better: str = 'higher', **unknown) -> float:
    """The FRM's cosine reward of the restored ``img`` for ``caption`` (higher is better)."""
    check_keys('calculate_frm_reward', unknown, ('model_name', 'checkpoint', 'caption', 'device', 'better'))
    check_better('calculate_frm_reward', better)
    device = resolve_device(device)
    frm = built_once('frm_reward', dict(model_name=model_name, checkpoint=checkpoint, device=device),
                     lambda: _frm(model_name, checkpoint, device))
    with torch.no_grad():
        return float(frm.similarity(bgr_to_tensor(img).to(device), [caption]).float().mean())
