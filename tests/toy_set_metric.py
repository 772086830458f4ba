"""A set-level metric cheap enough for the sharded-evaluation tests: a Fréchet distance between the two folders'
6-D colour statistics (per-image channel means and standard deviations), the FID formula on tiny features.

``||μ_r − μ_g||² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})``. pyiqa's FID (Inception at 299²) takes minutes on a small
CPU; this one goes through the same set-level path of FaceTestModel (called once, on whole folders, by rank 0).
Imported through an option file's ``host_packages``.
"""
import os

import cv2
import numpy as np
from basicsr.utils.registry import METRIC_REGISTRY
from scipy import linalg

from drward.metrics.catalog import CATALOG, MetricInfo


def _features(folder: str) -> np.ndarray:
    rows = []
    for name in sorted(os.listdir(folder)):
        if name.endswith('.png'):
            img = cv2.imread(os.path.join(folder, name)).astype(np.float64) / 255.0
            rows.append(np.concatenate([img.mean(axis=(0, 1)), img.std(axis=(0, 1))]))
    return np.stack(rows)


def calculate_toy_fid(img_folder: str, ref_folder: str, **_) -> float:
    real, fake = _features(ref_folder), _features(img_folder)
    mu_r, mu_g = real.mean(0), fake.mean(0)
    cov_r, cov_g = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = linalg.sqrtm(cov_r @ cov_g).real
    return float(((mu_r - mu_g) ** 2).sum() + np.trace(cov_r + cov_g - 2 * root))


if 'calculate_toy_fid' not in METRIC_REGISTRY:
    METRIC_REGISTRY.register(calculate_toy_fid)
CATALOG.setdefault('calculate_toy_fid', MetricInfo('toyFID', 'lower', needs_gt=True, set_level=True))
