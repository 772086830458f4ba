"""Score a folder of restored images with the metrics of an option file's ``val.metrics``.

Per-image metrics are called exactly as BasicSR calls them (``basicsr.metrics.calculate_metric``: HWC uint8 BGR,
``img`` restored, ``img2`` ground truth) and averaged with ``nanmean``: an image where a face metric finds no face
gives ``nan`` and is counted in the notes. Set-level metrics (FID) are called once with the folders.

A metric whose weight file is missing (:class:`~drward.utils.options.MissingWeightsError`, or an ``OSError`` from a
download attempt) does not stop the run: its cell reads ``n/a (missing <path>)`` and it is not called again.
"""
from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import cv2
import numpy as np
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY
from tqdm import tqdm

from drward.metrics.catalog import MetricInfo, metric_info
from drward.metrics.face_metric import face_backend_name
from drward.metrics.report import NA, Cell
from drward.utils.options import MissingWeightsError
from drward.utils.registry import base_name

FACE_METRICS = ('calculate_ids', 'calculate_lmd')
_FACE_OPTION_KEYS = ('backend', 'weights_dir', 'face_box', 'device')


@dataclass
class FolderScores:
    """Mean per metric (a number or an ``n/a ...`` string), per-image values, and notes for the table."""

    means: Dict[str, Cell] = field(default_factory=dict)
    per_image: Dict[str, List[float]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def metric_columns(metric_opts: Mapping[str, Mapping[str, Any]]) -> Dict[str, MetricInfo]:
    return {name: metric_info(name, opts) for name, opts in metric_opts.items()}


def unavailable(error: BaseException) -> str:
    """The table cell of a metric that could not be built: ``n/a (missing <path>)`` or ``n/a (<error>)``."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    prefix = 'missing weight file '
    if text.startswith(prefix):
        return f'{NA} (missing {text[len(prefix):].split(" (option key")[0]})'
    return f'{NA} ({text})'


def read_bgr(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f'cannot read image {path}')
    return img


def _set_level(opts: Mapping[str, Any], restored_dir: str, gt_dir: Optional[str]) -> Cell:
    opts = deepcopy(dict(opts))
    kind = opts.pop('type')
    if opts.get('reference') == 'gt':
        opts.pop('reference')
        opts['ref_folder'] = gt_dir
    return float(METRIC_REGISTRY.get(kind)(img_folder=restored_dir, **opts))


def _per_image(names: List[str], restored: Mapping[str, str], gt: Optional[Mapping[str, str]],
               opts: Mapping[str, Any], label: str, pbar: bool) -> List[float]:
    values = []
    for name in tqdm(names, desc=f'{label}', unit='image', disable=not pbar, leave=False):
        data = {'img': read_bgr(restored[name])}
        if gt is not None:
            data['img2'] = read_bgr(gt[name])
        values.append(float(calculate_metric(data, dict(opts))))
    return values


def _face_note(columns: Dict[str, MetricInfo], metric_opts: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """One line per identity/landmark backend in use, naming the columns it serves."""
    by_backend: Dict[str, List[str]] = {}
    for name, opts in metric_opts.items():
        if base_name(opts.get('type', '')) in FACE_METRICS:
            chosen = {k: opts[k] for k in _FACE_OPTION_KEYS if k in opts}
            chosen.setdefault('face_box', 'aligned')
            by_backend.setdefault(face_backend_name(**chosen), []).append(columns[name].label)
    return [f'{", ".join(labels)} backend: {backend}' for backend, labels in by_backend.items()]


@dataclass
class ImageScores:
    """Per-image values of one row (all of a set, or one rank's share): ``values[metric][name]``; ``cells`` holds
    the ``n/a ...`` cell of a per-image metric that could not be built."""

    values: Dict[str, Dict[str, float]] = field(default_factory=dict)
    cells: Dict[str, str] = field(default_factory=dict)


def score_images(names: List[str], restored: Mapping[str, str], gt: Optional[Mapping[str, str]],
                 metric_opts: Mapping[str, Mapping[str, Any]], pbar: bool = True, label: str = '') -> ImageScores:
    """The per-image metrics of ``names`` (every rank scores its own share; :func:`merge_image_scores` joins them).
    Set-level metrics and metrics needing a missing GT are left to :func:`finish_scores`."""
    scores, columns = ImageScores(), metric_columns(metric_opts)
    for name, opts in metric_opts.items():
        info = columns[name]
        if info.set_level or (info.needs_gt and gt is None):
            continue
        try:
            values = _per_image(names, restored, gt, opts, f'{label} {info.label}'.strip(), pbar) if names else []
        except (MissingWeightsError, OSError) as error:
            scores.cells[name] = unavailable(error)
            continue
        scores.values[name] = dict(zip(names, values))
    return scores


def merge_image_scores(parts: List[ImageScores]) -> ImageScores:
    """The shares' per-image values in one :class:`ImageScores` (a metric unavailable on any share stays n/a)."""
    merged = ImageScores()
    for part in parts:
        for name, cell in part.cells.items():
            merged.cells.setdefault(name, cell)
        for name, values in part.values.items():
            merged.values.setdefault(name, {}).update(values)
    for name in merged.cells:
        merged.values.pop(name, None)
    return merged


def finish_scores(image_scores: ImageScores, names: List[str], gt_present: bool,
                  metric_opts: Mapping[str, Mapping[str, Any]], restored_dir: str,
                  gt_dir: Optional[str]) -> FolderScores:
    """The table's means (``nanmean`` over ``names`` in sorted order), per-image lists and notes from the per-image
    values, and the set-level metrics (FID) called once on the whole ``restored_dir``."""
    scores = FolderScores()
    columns = metric_columns(metric_opts)
    names = sorted(names)
    for name, opts in metric_opts.items():
        info = columns[name]
        if info.needs_gt and not gt_present:
            scores.means[name] = f'{NA} (no ground truth)'
            continue
        if info.set_level:
            try:
                scores.means[name] = _set_level(opts, restored_dir, gt_dir)
            except (MissingWeightsError, OSError) as error:
                scores.means[name] = unavailable(error)
            continue
        if name in image_scores.cells:
            scores.means[name] = image_scores.cells[name]
            continue
        values = [image_scores.values[name][n] for n in names]
        scores.per_image[name] = values
        finite = [v for v in values if not math.isnan(v)]
        scores.means[name] = float(np.mean(finite)) if finite else f'{NA} (no face found)'
        if len(finite) < len(values):
            scores.notes.append(f'{info.label}: {len(values) - len(finite)} of {len(values)} images without a '
                                'detected face, averaged over the rest')
    scores.notes = _face_note(columns, metric_opts) + scores.notes
    return scores


def evaluate_folder(restored: Mapping[str, str], gt: Optional[Mapping[str, str]],
                    metric_opts: Mapping[str, Mapping[str, Any]], restored_dir: str, gt_dir: Optional[str],
                    pbar: bool = True, label: str = '') -> FolderScores:
    """Score ``restored`` (name → image path) against ``gt`` (name → path, or None for no-reference sets)."""
    names = sorted(restored)
    return finish_scores(score_images(names, restored, gt, metric_opts, pbar, label), names, gt is not None,
                         metric_opts, restored_dir, gt_dir)
