"""The hybrid annotation, end to end: metrics → 12-D features → SVM on human pairs → report → labels for the rest.

:func:`annotate_pairs` is what ``tools/annotate.py`` runs. Human rows are returned unchanged; every other row
(unlabelled, or labelled earlier by an SVM) gets ``source: "svm"``, a label (hard 0/1, or P(A preferred) with
``soft_labels``) and the SVM's confidence; rows below ``min_confidence`` are dropped. A pair with an unreadable
image is left out (neither fitted on nor labelled) and the file is listed in the report (``skipped_files``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from drward.annotate.cache import MetricCache
from drward.annotate.features import PairMetrics, compute_pair_metrics
from drward.annotate.quality import QualityMetric
from drward.annotate.svm import (
    AgreementReport,
    PreferenceSVM,
    SVMOptions,
    hard_labels,
    single_metric_agreement,
    split_held_out,
)
from drward.data.pairs_file import PreferencePair


@dataclasses.dataclass
class AnnotationResult:
    """The labelled pairs, the agreement report and counts of what the SVM labelled."""

    pairs: List[PreferencePair]
    report: AgreementReport
    svm: PreferenceSVM
    n_svm_labelled: int
    n_dropped_low_confidence: int
    mean_svm_confidence: float
    #: image path → why it could not be read (its pairs are left out of the output)
    skipped_files: Dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> Dict:
        """A JSON-ready dict: the report's fields, its readable lines and the labelling counts."""
        summary = dataclasses.asdict(self.report)
        lines = self.report.lines()
        if self.skipped_files:
            lines.append(f'skipped {len(self.skipped_files)} unreadable image(s) and the pairs using them: '
                         + '; '.join(self.skipped_files))
        summary.update(n_svm_labelled=self.n_svm_labelled, n_dropped_low_confidence=self.n_dropped_low_confidence,
                       mean_svm_confidence=self.mean_svm_confidence, skipped_files=dict(self.skipped_files),
                       summary_lines=lines)
        return summary


def fit_with_held_out(pair_metrics: PairMetrics, labels: np.ndarray, options: SVMOptions,
                      higher_is_better: Sequence[bool]) -> tuple:
    """Split the labelled pairs, fit on one part, measure agreement on the other: ``(svm, report)``.

    ``labels`` are P(A preferred) of the rows of ``pair_metrics``; indices in the report index these rows.
    """
    fit_idx, held_idx = split_held_out(labels, options.held_out_fraction, options.seed)
    features = pair_metrics.features()
    svm = PreferenceSVM(options).fit(features[fit_idx], labels[fit_idx])
    y_held, _ = hard_labels(labels[held_idx])
    _, predicted, _ = svm.predict(features[held_idx])
    majority = max(np.mean(y_held), 1 - np.mean(y_held))
    rules = single_metric_agreement(pair_metrics.values_a[held_idx], pair_metrics.values_b[held_idx], y_held,
                                    pair_metrics.names, higher_is_better)
    report = AgreementReport(
        metric_names=list(pair_metrics.names), fit_indices=fit_idx.tolist(), held_out_indices=held_idx.tolist(),
        n_ties_skipped=int(np.sum(labels == 0.5)), best_params=svm.best_params, cv_accuracy=svm.cv_accuracy,
        held_out_agreement=float(np.mean(predicted == y_held)), majority_baseline=float(majority),
        single_metric_agreement=rules)
    return svm, report


def _subset(pair_metrics: PairMetrics, rows: np.ndarray) -> PairMetrics:
    return PairMetrics(pair_metrics.names, pair_metrics.values_a[rows], pair_metrics.values_b[rows])


def _svm_pair(pair: PreferencePair, p: float, confidence: float, soft: bool) -> PreferencePair:
    label = float(p) if soft else float(p > 0.5)
    return dataclasses.replace(pair, label=label, source='svm', confidence=float(confidence))


def annotate_pairs(pairs: Sequence[PreferencePair], metrics: Sequence[QualityMetric], cache: MetricCache,
                   base_dir: str | os.PathLike = '.', options: Optional[SVMOptions] = None,
                   soft_labels: bool = False, min_confidence: float = 0.0,
                   progress: bool = True) -> AnnotationResult:
    """Label every non-human pair of ``pairs`` with an SVM fitted on the human ones (see the module docstring).

    The report's fit / held-out indices index ``pairs``.
    """
    options = options or SVMOptions()
    pair_metrics = compute_pair_metrics(pairs, metrics, cache, base_dir, progress=progress)
    readable = pair_metrics.readable_rows()
    human_rows = np.array([i for i, pair in enumerate(pairs) if pair.is_human and readable[i]], dtype=int)
    other_rows = np.array([i for i, pair in enumerate(pairs) if not pair.is_human and readable[i]], dtype=int)
    labels = np.array([pairs[i].label for i in human_rows], dtype=float)
    svm, report = fit_with_held_out(_subset(pair_metrics, human_rows), labels, options,
                                    [m.higher_is_better for m in metrics])
    report.fit_indices = human_rows[report.fit_indices].tolist()
    report.held_out_indices = human_rows[report.held_out_indices].tolist()
    p, _, confidence = svm.predict(_subset(pair_metrics, other_rows).features())
    labelled: Dict[int, PreferencePair] = {}
    for row, p_row, conf in zip(other_rows, p, confidence):
        if conf >= min_confidence:
            labelled[int(row)] = _svm_pair(pairs[row], p_row, conf, soft_labels)
    output = [pair if pair.is_human else labelled[i] for i, pair in enumerate(pairs)
              if readable[i] and (pair.is_human or i in labelled)]
    kept = [labelled[i].confidence for i in labelled]
    return AnnotationResult(output, report, svm, len(labelled), len(other_rows) - len(labelled),
                            float(np.mean(kept)) if kept else float('nan'), pair_metrics.unreadable)
