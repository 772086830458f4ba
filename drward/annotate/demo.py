"""A tiny annotation task made by code: pairs of degraded demo faces with a known preference rule.

Each demo face (:mod:`drward.data.demo_faces`) gets ``variants`` degraded copies, each with its own Gaussian blur
``σ ~ U(0.5, 6)`` and noise ``δ ~ U(0, 15)`` (0–255 units; :mod:`drward.data.degrade`). The simulated person
prefers the less degraded copy, by the severity ``s = σ/6 + δ/15``: ``label = [s_A < s_B]``. Every pair of copies
of one face is a pair (A/B order random), with the clean face as its ``reference`` and the face's caption file as
its ``caption_key``; a seeded ``human_fraction`` of the pairs carry the label as ``source: "human"``, the rest are
unlabelled and left to the SVM. Since the rule is known for every pair, the SVM's labels can be scored too.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Dict, List, Tuple

import cv2
import numpy as np

from drward.data.degrade import Degradation, apply_degradation, gaussian_kernel, seeded_global_rng
from drward.data.demo_faces import ensure_demo_faces
from drward.data.image_io import read_image
from drward.data.pairs_file import PreferencePair, write_pairs

BLUR_RANGE = (0.5, 6.0)
NOISE_RANGE = (0.0, 15.0)


@dataclasses.dataclass
class DemoPairs:
    """Where the demo wrote its pairs file, and the true label of every pair (keyed by ``(image_a, image_b)``)."""

    pairs_file: str
    pairs: List[PreferencePair]
    truth: Dict[Tuple[str, str], float]


def severity(blur_sigma: float, noise_sigma: float) -> float:
    """The simulated person's dislike of a copy: ``s = σ/6 + δ/15`` (lower is preferred)."""
    return blur_sigma / BLUR_RANGE[1] + noise_sigma / NOISE_RANGE[1]


def _write_variants(face_path: str, out_dir: str, variants: int, rng: np.random.Generator) -> List[Tuple[str, float]]:
    """Degraded copies of one face as PNGs; returns ``(path, severity)`` per copy."""
    clean = read_image(face_path)
    stem = os.path.splitext(os.path.basename(face_path))[0]
    copies = []
    for v in range(variants):
        blur, noise = rng.uniform(*BLUR_RANGE), rng.uniform(*NOISE_RANGE)
        degradation = Degradation(kernel=gaussian_kernel(41, blur), scale=1.0, noise_sigma=noise)
        with seeded_global_rng(int(rng.integers(2 ** 31))):
            lq = apply_degradation(clean, degradation)
        path = os.path.join(out_dir, f'{stem}_v{v}.png')
        _write_png_if_changed(path, np.clip(np.round(lq * 255.0), 0, 255).astype(np.uint8))
        copies.append((path, severity(blur, noise)))
    return copies


def _write_png_if_changed(path: str, bgr_uint8: np.ndarray) -> None:
    """Write the PNG unless the file already holds these bytes (so a rerun keeps mtimes and the metric cache)."""
    ok, encoded = cv2.imencode('.png', bgr_uint8)
    if not ok:
        raise OSError(f'cannot encode demo variant {path}')
    data = encoded.tobytes()
    if os.path.isfile(path):
        with open(path, 'rb') as f:
            if f.read() == data:
                return
    with open(path, 'wb') as f:
        f.write(data)


def make_demo_pairs(folder: str, faces: int = 12, size: int = 256, variants: int = 6,
                    human_fraction: float = 0.4, seed: int = 0) -> DemoPairs:
    """Write demo faces, their degraded copies and ``<folder>/pairs.jsonl`` (absolute paths); see the docstring."""
    rng = np.random.default_rng(seed)
    face_dir, variant_dir = os.path.join(folder, 'faces'), os.path.join(folder, 'variants')
    os.makedirs(variant_dir, exist_ok=True)
    ensure_demo_faces(face_dir, size=size, count=faces)
    face_paths = sorted(os.path.abspath(os.path.join(face_dir, n)) for n in os.listdir(face_dir)
                        if n.endswith('.png'))[:faces]
    pairs, truth = [], {}
    for face_path in face_paths:
        copies = _write_variants(face_path, os.path.abspath(variant_dir), variants, rng)
        for (path_1, sev_1), (path_2, sev_2) in itertools.combinations(copies, 2):
            if rng.uniform() < 0.5:
                (path_1, sev_1), (path_2, sev_2) = (path_2, sev_2), (path_1, sev_1)
            label = float(sev_1 < sev_2)
            pair = PreferencePair(path_1, path_2, caption_key=os.path.splitext(face_path)[0] + '.txt',
                                  reference=face_path)
            if rng.uniform() < human_fraction:
                pair = dataclasses.replace(pair, label=label, source='human', confidence=1.0)
            pairs.append(pair)
            truth[(path_1, path_2)] = label
    pairs_file = os.path.join(folder, 'pairs.jsonl')
    write_pairs(pairs_file, pairs)
    return DemoPairs(pairs_file, pairs, truth)


def svm_label_accuracy(labelled: List[PreferencePair], truth: Dict[Tuple[str, str], float]) -> float:
    """Share of the SVM-labelled pairs whose hard label matches the known rule."""
    rows = [(pair.label > 0.5) == (truth[(pair.image_a, pair.image_b)] > 0.5)
            for pair in labelled if pair.source == 'svm' and (pair.image_a, pair.image_b) in truth]
    return float(np.mean(rows)) if rows else float('nan')
