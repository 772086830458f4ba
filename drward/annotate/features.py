"""The 12-D pair feature: six quality metrics of image A, then the same six of image B, standardised.

For pair ``i`` with metric values ``m(A_i), m(B_i) ∈ R^6`` the raw feature is ``x_i = [m(A_i), m(B_i)] ∈ R^12``.
:class:`PairStandardiser` standardises it per metric, ``(m − μ_m)/σ_m``, with one ``(μ_m, σ_m)`` per metric
fitted on every image of the labelled pairs it is fitted on (A and B pooled, so swapping A and B swaps the two
halves of the standardised feature exactly). Missing values (``nan``: e.g. no face found) become 0 after
standardisation, i.e. they are imputed with the fitted mean.

:func:`compute_pair_metrics` computes the raw values with the metric cache (:mod:`drward.annotate.cache`) and a
progress bar over images.
"""
from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from tqdm import tqdm

from drward.annotate.cache import MetricCache, metric_key
from drward.annotate.quality import QualityMetric
from drward.data.image_io import ImageReadError, read_image
from drward.data.pairs_file import PreferencePair, resolve_path


@lru_cache(maxsize=16)
def load_rgb_uint8(path: str) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)`` (errors name the file: :func:`drward.data.image_io.read_image`)."""
    bgr = read_image(path)
    return np.clip(np.round(bgr[..., ::-1] * 255.0), 0, 255).astype(np.uint8)


@dataclasses.dataclass
class PairMetrics:
    """Raw metric values of every pair: ``values_a[i, j]`` is metric ``names[j]`` of pair ``i``'s image A."""

    names: List[str]
    values_a: np.ndarray
    values_b: np.ndarray
    #: image path → why it could not be read; the pairs using one have ``nan`` rows and ``readable`` False
    unreadable: Dict[str, str] = dataclasses.field(default_factory=dict)
    readable: Optional[np.ndarray] = None  # (n,) bool; None: every pair read

    def readable_rows(self) -> np.ndarray:
        """Whether each pair's images (and reference) could all be read."""
        return np.ones(len(self.values_a), dtype=bool) if self.readable is None else self.readable

    def features(self) -> np.ndarray:
        """The raw ``(n, 2m)`` pair features ``[m(A), m(B)]`` (standardise with :class:`PairStandardiser`)."""
        return pair_features(self.values_a, self.values_b)


def pair_features(values_a: np.ndarray, values_b: np.ndarray) -> np.ndarray:
    """``x = [m(A), m(B)]``: both images' metric values side by side, ``(n, m) × 2 → (n, 2m)``."""
    values_a, values_b = np.asarray(values_a, float), np.asarray(values_b, float)
    if values_a.shape != values_b.shape or values_a.ndim != 2:
        raise ValueError(f'metric arrays must both be (n, m); got {values_a.shape} and {values_b.shape}')
    return np.hstack([values_a, values_b])


def swap_features(features: np.ndarray) -> np.ndarray:
    """``[m(A), m(B)] → [m(B), m(A)]``: the feature of the same pair with A and B exchanged."""
    half = features.shape[1] // 2
    return np.hstack([features[:, half:], features[:, :half]])


class PairStandardiser(BaseEstimator, TransformerMixin):
    """Standardise ``[m(A), m(B)]`` per metric with A and B pooled; ``nan`` → 0 (the mean) after scaling."""

    def fit(self, features: np.ndarray, labels: Optional[np.ndarray] = None) -> 'PairStandardiser':
        features = np.asarray(features, float)
        half = features.shape[1] // 2
        pooled = np.vstack([features[:, :half], features[:, half:]])
        counts = np.sum(~np.isnan(pooled), axis=0)
        safe = np.where(np.isnan(pooled), 0.0, pooled)
        self.mean_ = np.where(counts > 0, safe.sum(axis=0) / np.maximum(counts, 1), 0.0)
        spread = np.where(np.isnan(pooled), 0.0, pooled - self.mean_)
        std = np.sqrt((spread ** 2).sum(axis=0) / np.maximum(counts, 1))
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, float)
        half = features.shape[1] // 2
        mean, scale = np.tile(self.mean_, 2), np.tile(self.scale_, 2)
        if features.shape[1] != 2 * half or half != len(self.mean_):
            raise ValueError(f'expected {2 * len(self.mean_)} feature columns, got {features.shape[1]}')
        return np.nan_to_num((features - mean) / scale, nan=0.0)


def _pair_jobs(pair: PreferencePair, base_dir: str) -> Tuple[Tuple[str, str], Tuple[str, str]]:
    """The ``(image, reference)`` jobs of a pair's A and B: the reference is the pair's, else the other image."""
    image_a, image_b = resolve_path(pair.image_a, base_dir), resolve_path(pair.image_b, base_dir)
    reference = resolve_path(pair.reference, base_dir)
    return (image_a, reference or image_b), (image_b, reference or image_a)


def _job_values(image: str, reference: str, metrics: Sequence[QualityMetric], cache: MetricCache) -> List[float]:
    values = []
    for metric in metrics:
        ref = reference if metric.needs_reference else None
        key = metric_key(image, metric.name, metric.version, ref)
        values.append(cache.get_or_compute(
            key, lambda m=metric, r=ref: m.compute(load_rgb_uint8(image), None if r is None else load_rgb_uint8(r))))
    return values


def compute_pair_metrics(pairs: Sequence[PreferencePair], metrics: Sequence[QualityMetric], cache: MetricCache,
                         base_dir: str | os.PathLike = '.', progress: bool = True) -> PairMetrics:
    """Metric values of both images of every pair, computed once per distinct image (and reference)."""
    base_dir = os.fspath(base_dir)
    pair_jobs = [_pair_jobs(pair, base_dir) for pair in pairs]
    distinct = list(dict.fromkeys(job for jobs in pair_jobs for job in jobs))
    values, unreadable, failed = {}, {}, set()
    for image, reference in tqdm(distinct, desc='quality metrics', unit='image', disable=not progress):
        try:
            values[(image, reference)] = _job_values(image, reference, metrics, cache)
        except ImageReadError as error:  # the pair is skipped and the file listed in the report
            unreadable[next((p for p in (image, reference) if p and p in str(error)), image)] = str(error)
            values[(image, reference)] = [float('nan')] * len(metrics)
            failed.add((image, reference))
    cache.flush()
    load_rgb_uint8.cache_clear()  # a later call must see edited files
    rows_a = [values[job_a] for job_a, _ in pair_jobs]
    rows_b = [values[job_b] for _, job_b in pair_jobs]
    shape = (len(pairs), len(metrics))
    readable = np.array([job_a not in failed and job_b not in failed for job_a, job_b in pair_jobs], dtype=bool)
    return PairMetrics([m.name for m in metrics], np.asarray(rows_a, float).reshape(shape),
                       np.asarray(rows_b, float).reshape(shape), unreadable, readable)
