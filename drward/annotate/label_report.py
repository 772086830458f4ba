"""The report of a label log: who labelled what, whether people agree, position bias, time, SVM agreement.

* **labels per annotator**: labels in effect, skips in effect, undos;
* **Cohen's κ** on the overlap, per pair of annotators over the pairs both labelled, with three categories (A, B,
  tie): ``κ = (p_o − p_e) / (1 − p_e)``, ``p_o`` the observed share of equal answers and ``p_e = Σ_c p₁(c) p₂(c)``
  the chance agreement from each annotator's category shares;
* **position bias**: the share of non-tie labels that chose the image shown on the *left* (½ without bias);
* **time per label**: median and mean ``seconds`` of each annotator's labels;
* **SVM agreement with each annotator**: 3-fold over that annotator's non-tie labels, the SVM
  (:mod:`drward.annotate.active`'s fast settings) fitted on every other labelled pair (all annotators, overlap
  pairs by their mean label) and scored on the fold — how well the metrics explain each person.
"""
from __future__ import annotations

import itertools
import os
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np

from drward.annotate.active import fit_svm
from drward.annotate.cache import MetricCache
from drward.annotate.collect import absolute_pairs
from drward.annotate.features import compute_pair_metrics
from drward.annotate.label_log import Decision, current_labels, read_label_log, replay
from drward.annotate.quality import build_metrics
from drward.annotate.svm import hard_labels


def category(label: float) -> str:
    return 'tie' if label == 0.5 else ('A' if label > 0.5 else 'B')


def cohens_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's κ of two equally long answer lists (``nan`` when chance agreement is 1)."""
    n = len(first)
    if n == 0:
        return float('nan')
    observed = sum(a == b for a, b in zip(first, second)) / n
    c1, c2 = Counter(first), Counter(second)
    chance = sum(c1[c] * c2[c] for c in set(c1) | set(c2)) / n ** 2
    return float('nan') if chance == 1 else (observed - chance) / (1 - chance)


def chose_left(decision: Decision) -> Optional[bool]:
    """Whether a non-tie label chose the image shown on the left (``None`` for ties or unknown side)."""
    if decision.label == 0.5 or decision.shown_left is None:
        return None
    return (decision.label > 0.5) == (decision.shown_left == 'image_a')


def svm_agreement(labels: Dict[tuple, Decision], features_of: Dict[tuple, np.ndarray], folds: int = 3,
                  seed: int = 0) -> Dict[str, float]:
    """Per annotator, the held-out agreement described in the module docstring."""
    per_pair = defaultdict(list)
    for (_, key), decision in labels.items():
        per_pair[key].append(decision.label)
    result = {}
    for annotator in sorted({a for a, _ in labels}):
        mine = [(key, d.label) for (a, key), d in labels.items() if a == annotator and d.label != 0.5]
        if len(mine) < folds:
            result[annotator] = float('nan')
            continue
        order = np.random.default_rng(seed).permutation(len(mine))
        hits = []
        for fold in np.array_split(order, folds):
            held = {mine[i][0] for i in fold}
            train = [k for k in per_pair if k not in held]
            svm = fit_svm(np.array([features_of[k] for k in train]), np.array([np.mean(per_pair[k]) for k in train]))
            if svm is None:
                continue
            predicted = svm.predict(np.array([features_of[mine[i][0]] for i in fold]))[1]
            hits += list(predicted == hard_labels(np.array([mine[i][1] for i in fold]))[0])
        result[annotator] = float(np.mean(hits)) if hits else float('nan')
    return result


def report_lines(path: str, metrics: Optional[str] = 'no_face') -> List[str]:
    """The report of the label log at ``path`` as lines (``metrics=None``: without the SVM part)."""
    decisions, malformed = read_label_log(path)
    labels = current_labels(decisions)
    lines = [f'label log {path}: {len(decisions)} decisions, {len({k for _, k in labels})} pairs labelled'
             + (f', {len(malformed)} malformed line(s) ignored: {[n for n, _ in malformed]}' if malformed else '')]
    annotators = sorted({d.annotator for d in decisions})
    undos = Counter(d.annotator for d in decisions if d.event == 'undo')
    skips = Counter(a for (a, _), stack in replay(decisions).items() if stack and stack[-1].event == 'skip')
    lines.append('annotator | labels | ties | skips | undos | chose left | median s | mean s')
    for who in annotators:
        mine = [d for (a, _), d in labels.items() if a == who]
        left = [c for c in (chose_left(d) for d in mine) if c is not None]
        seconds = [d.seconds for d in mine if d.seconds is not None]
        lines.append(f'{who} | {len(mine)} | {sum(d.label == 0.5 for d in mine)} | {skips[who]} | {undos[who]} | '
                     + (f'{np.mean(left):.1%} of {len(left)}' if left else '-') + ' | '
                     + (f'{np.median(seconds):.1f} | {np.mean(seconds):.1f}' if seconds else '- | -'))
    lines.append('position bias: "chose left" is the share of non-tie labels that picked the left image '
                 '(50% = no bias)')
    for first, second in itertools.combinations(annotators, 2):
        both = sorted({k for a, k in labels if a == first} & {k for a, k in labels if a == second})
        if both:
            kappa = cohens_kappa([category(labels[(first, k)].label) for k in both],
                                 [category(labels[(second, k)].label) for k in both])
            lines.append(f"Cohen's kappa {first} vs {second}: {kappa:.3f} on {len(both)} overlap pairs")
    if metrics and labels:
        keys = sorted({k for _, k in labels})
        base_dir = os.path.dirname(os.path.abspath(path))
        pairs = absolute_pairs([next(d.pair for (_, k2), d in labels.items() if k2 == k) for k in keys], base_dir)
        with MetricCache(os.path.splitext(path)[0] + '.metrics.sqlite') as cache:
            features = compute_pair_metrics(pairs, build_metrics(metrics), cache, progress=False).features()
        agreement = svm_agreement(labels, dict(zip(keys, features)))
        lines.append('SVM agreement with each annotator (3-fold, metrics ' + metrics + '): '
                     + ', '.join(f'{who} {value:.1%}' for who, value in agreement.items()))
    return lines


def print_report(path: str, metrics: Optional[str] = 'no_face') -> int:
    """Print :func:`report_lines` (image paths come from the log itself)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'label log {path} not found')
    print('\n'.join(report_lines(path, metrics)))
    return 0
