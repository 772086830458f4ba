"""Active pair selection: ask a person next for the pair on which the current SVM is least sure.

The SVM is the hybrid annotation's (:class:`drward.annotate.svm.PreferenceSVM` on the 12-D pair feature of
cached quality metrics, :mod:`drward.annotate.features`); its uncertainty on a pair is ``|p(A ≻ B) − ½|`` (smaller
is less sure). :class:`UncertaintyRanker` is the labelling page's ``--order uncertainty``: it computes the metrics
of every pair in a background thread (cached in ``<out stem>.metrics.sqlite``, so ``tools/annotate.py`` reuses
them), refits the SVM in the background every ``refit_every`` new labels, and orders the pairs least sure first;
until the first fit (metrics not ready, or labels of only one side) the order is a seeded random one.

:func:`simulate_labelling` runs the same loop against a simulated person, for ``benchmarks/active_labelling.py``.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from drward.annotate.cache import MetricCache
from drward.annotate.features import compute_pair_metrics
from drward.annotate.svm import PreferenceSVM, SVMOptions, hard_labels
from drward.data.pairs_file import PreferencePair

#: fast settings for refits while people label: a small C grid, 3 folds, margin confidence (no Platt fit)
ACTIVE_SVM = SVMOptions(C=(1.0, 10.0), cv_folds=3, confidence='margin')


def fit_svm(features: np.ndarray, labels: np.ndarray, options: SVMOptions = ACTIVE_SVM) -> Optional[PreferenceSVM]:
    """The SVM fitted on these labelled pairs, or ``None`` while they cannot be fitted (< 4 non-ties, one side)."""
    y, keep = hard_labels(labels)
    if keep.sum() < 4 or len(np.unique(y[keep])) < 2:
        return None
    return PreferenceSVM(options).fit(features, labels)


def uncertainty_order(p: np.ndarray, tie_break: Sequence[int]) -> List[int]:
    """Pair indices sorted by ``|p − ½|`` (least sure first); equal values keep the ``tie_break`` order."""
    rank = np.empty(len(p), int)
    rank[np.asarray(tie_break)] = np.arange(len(p))
    return [int(i) for i in np.lexsort((rank, np.abs(np.asarray(p) - 0.5)))]


class UncertaintyRanker:
    """``ranker()`` → pair indices, least sure first (see the module docstring). Thread-safe."""

    def __init__(self, pairs: Sequence[PreferencePair], metrics: Sequence, cache_path: str, refit_every: int = 20,
                 seed: int = 0) -> None:
        self.pairs, self.metrics, self.cache_path = list(pairs), list(metrics), cache_path
        self.refit_every = max(1, int(refit_every))
        self.random_order = [int(i) for i in np.random.default_rng(seed).permutation(len(self.pairs))]
        self.features: Optional[np.ndarray] = None
        self.p: Optional[np.ndarray] = None
        self.fits = 0
        self._fitted_at = -1
        self._busy = threading.Lock()
        self._order_lock = threading.Lock()
        self._order: List[int] = list(self.random_order)

    def __call__(self) -> List[int]:
        with self._order_lock:
            return self._order

    def start(self, store) -> threading.Thread:
        """Compute the pair features in the background, then make a first fit from the labels already there."""
        def run() -> None:
            with MetricCache(self.cache_path) as cache:
                self.features = compute_pair_metrics(self.pairs, self.metrics, cache, progress=False).features()
            self.refit(store.labels())
        thread = threading.Thread(target=run, name='uncertainty-features', daemon=True)
        thread.start()
        return thread

    def on_label(self, store) -> None:
        """Called after each label: refit in the background once ``refit_every`` new labels came in."""
        labels = store.labels()
        if self.features is not None and len(labels) - self._fitted_at >= self.refit_every:
            threading.Thread(target=self.refit, args=(labels,), name='uncertainty-refit', daemon=True).start()

    def refit(self, labels: Dict[tuple, float]) -> None:
        """Fit on ``{(annotator, pair index): label}`` (overlap pairs: mean label) and reorder the pairs."""
        if self.features is None or not self._busy.acquire(blocking=False):
            return
        try:
            per_pair: Dict[int, List[float]] = {}
            for (_, index), label in labels.items():
                per_pair.setdefault(index, []).append(label)
            indices = np.array(sorted(per_pair), int)
            values = np.array([np.mean(per_pair[i]) for i in indices], float)
            svm = fit_svm(self.features[indices], values) if len(indices) else None
            self._fitted_at = len(labels)
            if svm is None:
                return
            p = svm.predict(self.features)[0]
            with self._order_lock:
                self.p, self._order = p, uncertainty_order(p, self.random_order)
            self.fits += 1
        finally:
            self._busy.release()


def simulate_labelling(features: np.ndarray, truth: np.ndarray, pool: np.ndarray, held_out: np.ndarray,
                       order: str, budget: int, step: int, flip: float, rng: np.random.Generator,
                       start: int = 20, fit: Callable = fit_svm) -> Dict[int, float]:
    """Label ``budget`` pairs of ``pool`` one ``step`` at a time (first ``start`` in random order), refitting after
    each step; the simulated person answers ``truth`` (P(A preferred), 0/1) flipped with probability ``flip``.

    Returns ``{number of labels: agreement of the SVM with truth on held_out}`` after each step.
    """
    answers = np.where(rng.uniform(size=len(truth)) < flip, 1.0 - truth, truth)
    random_order = [int(i) for i in rng.permutation(pool)]
    chosen: List[int] = random_order[:start]
    curve: Dict[int, float] = {}
    while True:
        svm = fit(features[chosen], answers[chosen])
        if svm is not None:
            predicted = svm.predict(features[held_out])[1]
            curve[len(chosen)] = float(np.mean(predicted == hard_labels(truth[held_out])[0]))
        if len(chosen) >= budget:
            return curve
        taken = set(chosen)
        rest = [i for i in random_order if i not in taken]
        if order == 'uncertainty' and svm is not None:
            p = svm.predict(features[rest])[0]
            rest = [rest[j] for j in uncertainty_order(p, range(len(rest)))]
        chosen += rest[:min(step, budget - len(chosen))]
