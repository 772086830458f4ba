"""PreferencePairDataset: a pairs file (drward/data/pairs_file.py) → image pairs, caption and P(A preferred).

Each item is ``{'img_a', 'img_b', 'caption', 'label', 'source', 'confidence', 'a_path', 'b_path'}``: the two images
as ``(3, image_size, image_size)`` float32 RGB in [0, 1] (centre-crop, then resize, as FaceDegradationDataset
does), the caption for the FRM's text side and ``label`` = P(image A preferred) as a float32 scalar tensor (the
soft target of ``L_FRM = −Σ_j y_j log softmax([s_A, s_B])_j``, with ``y = [label, 1 − label]``).

Options (BasicSR dataset options; BasicSR's own keys such as ``phase``, ``batch_size_per_gpu`` are accepted too):

* ``pairs_file`` (required): the JSONL pairs file; rows without a label are skipped (and counted in the log);
* ``io_backend``: ``{type: disk}`` (default) or ``{type: lmdb}`` (:mod:`drward.data.image_source`); with lmdb,
  ``image_root`` is the lmdb folder (required) and each image path of the pairs file is read as the key
  ``<path without extension>`` (``tools/make_lmdb.py --recursive`` packs ``face_0001/gfpgan.png`` so);
* ``image_root``: folder that relative image / caption paths start from (default: the pairs file's folder);
* ``image_size`` (224): side of the square images;
* ``sources`` (``[human, svm]``): which label sources to keep; ``min_confidence`` (0): drop rows whose
  ``confidence`` is lower (a row without one counts as 1);
* captions, per pair: ``caption``; else ``caption_key`` — looked up in ``caption_file`` (JSON or TSV, as in
  FaceDegradationDataset) when one is given, else read as the path of a text file; else ``<stem of A>.txt``
  beside image A, or image A's name in the caption file (lmdb: its key; the caption file defaults to
  ``<lmdb>/captions.tsv``); else ``fallback_caption`` (``caption_policy: strict`` makes a pair without a caption an
  error naming its image A instead);
* ``use_swap``: exchange A and B at random (label → 1 − label); ``use_hflip``: flip both images together;
* ``max_bad_fraction`` (0.1): a pair with an unreadable image is skipped with a warning naming the file (the next
  pair is used, :mod:`drward.data.bad_images`); more than that fraction of bad pairs stops the run;
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from drward.data import image_io
from drward.data.bad_images import BadImageGuard
from drward.data.dataset_options import BASICSR_DATASET_OPTIONS, CAPTION_OPTIONS, dataset_options
from drward.data.degrade import seeded_global_rng
from drward.data.face_degradation_dataset import (
    _bgr_to_tensor,  # the face dataset's BGR array → RGB tensor
    fill_missing_captions,
)
from drward.data.image_source import ImageSource, lmdb_key
from drward.data.pairs_file import LABEL_SOURCES, PreferencePair, pair_caption, read_pairs, resolve_path
from drward.utils.option_schema import REQUIRED, Bool, Choice, Int, ListOf, Num, Option, Text
from drward.utils.registry import register
from drward.utils.resumable_sampler import SampleKey, sample_seed


@register(DATASET_REGISTRY)
class PreferencePairDataset(data.Dataset):
    """Labelled preference pairs for FRM training; see the module docstring for items and options."""

    #: Its option keys (docs/design.md §3): BasicSR's, the captions' and its own.
    options = {
        **BASICSR_DATASET_OPTIONS, **CAPTION_OPTIONS,
        'pairs_file': Option(Text(), REQUIRED, 'the JSONL of labelled pairs'),
        'image_root': Option(Text(nullable=True), None, "the pairs' image folder (default: the pairs file's)"),
        'image_size': Option(Int(8), 224, 'both images resized to image_size x image_size'),
        'sources': Option(ListOf(Choice(*LABEL_SOURCES)), list(LABEL_SOURCES), 'which labels to train on'),
        'min_confidence': Option(Num(0, 1), 0.0, 'pairs labelled with less confidence are left out'),
        'use_swap': Option(Bool(), False, 'randomly swap A and B (and the label)'),
    }

    def __init__(self, opt: Mapping[str, Any]) -> None:
        super().__init__()
        self.opt = dict(opt)  # BasicSR models read dataloader.dataset.opt['name']
        opt = dataset_options(self, opt)
        self.pairs_file = opt['pairs_file']
        if not os.path.isfile(self.pairs_file):
            raise FileNotFoundError(f'pairs file {self.pairs_file} (option pairs_file) does not exist')
        lmdb = (opt['io_backend'] or {}).get('type') == 'lmdb'
        self.image_root = opt['image_root'] or (None if lmdb else os.path.dirname(os.path.abspath(self.pairs_file)))
        self.source = ImageSource('PreferencePairDataset', opt['io_backend'], self.image_root,
                                  opt['max_image_pixels'])
        self.image_size = opt['image_size']
        self.use_swap = opt['use_swap']
        self.use_hflip = opt['use_hflip']
        self.fallback_caption = opt['fallback_caption']
        self.caption_policy = opt['caption_policy']
        self.pairs = self._select(read_pairs(self.pairs_file), opt)
        self.captions = self._resolve_captions(opt['caption_file'] or self.source.default_caption_file())
        self.guard = BadImageGuard('PreferencePairDataset', [f'pair {pair.image_a} / {pair.image_b}'
                                                             for pair in self.pairs],
                                   opt['max_bad_fraction'])

    def _select(self, pairs: List[PreferencePair], opt: Mapping[str, Any]) -> List[PreferencePair]:
        sources, min_confidence = list(opt['sources']), float(opt['min_confidence'])
        unlabelled = sum(1 for pair in pairs if not pair.is_labelled)
        kept = [pair for pair in pairs if pair.is_labelled and pair.source in sources
                and (1.0 if pair.confidence is None else pair.confidence) >= min_confidence]
        if not kept:
            raise ValueError(f'pairs file {self.pairs_file} has no labelled pairs with source in {sources} and '
                             f'confidence >= {min_confidence} ({len(pairs)} rows, {unlabelled} unlabelled)')
        get_root_logger().info(f'PreferencePairDataset: {len(kept)} of {len(pairs)} pairs from {self.pairs_file} '
                               f'({unlabelled} unlabelled skipped)')
        return kept

    def _resolve_captions(self, caption_file: Any) -> List[str]:
        mapping = image_io.read_caption_file(caption_file) if caption_file else None
        found = [self._caption(pair, mapping) for pair in self.pairs]
        names = [self.source.describe(self._name(pair.image_a)) for pair in self.pairs]
        captions, _ = fill_missing_captions('PreferencePairDataset', found, self.fallback_caption, 'pairs',
                                            policy=self.caption_policy, names=names)
        return captions

    def _caption(self, pair: PreferencePair, mapping: Optional[Mapping[str, str]]) -> Optional[str]:
        """``caption``; else ``caption_key`` looked up in the caption file (if given) or read as a text file;
        else ``<stem of A>.txt`` beside image A; None when none of these gives a caption."""
        if pair.caption is not None:
            return pair.caption
        if pair.caption_key is None:
            return self.source.caption(self._name(pair.image_a), mapping or {})
        if mapping is not None:
            return mapping.get(pair.caption_key) or None
        return pair_caption(pair, self.image_root, None)  # the caption_key file's text

    def __len__(self) -> int:
        return len(self.pairs)

    def _name(self, path: str) -> str:
        """The source's name of a pairs-file image path: the resolved file path (disk) or its lmdb key."""
        return lmdb_key(path) if self.source.is_lmdb else resolve_path(path, self.image_root)

    def _image(self, name: str) -> np.ndarray:
        return image_io.fit_square(self.source.read(name), self.image_size)

    def _read_pair(self, i: int):
        pair = self.pairs[i]
        a_path, b_path = self._name(pair.image_a), self._name(pair.image_b)
        return a_path, b_path, self._image(a_path), self._image(b_path)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        i, (a_path, b_path, img_a, img_b) = self.guard.read(index, self._read_pair)  # a bad image: next pair
        pair, label = self.pairs[i], float(self.pairs[i].label)
        # a training draw keyed (seed, epoch, position) by ResumableSampler swaps/flips the same after a resume
        with seeded_global_rng(sample_seed(index) if isinstance(index, SampleKey) else None):
            if self.use_swap and np.random.uniform() < 0.5:
                img_a, img_b, a_path, b_path, label = img_b, img_a, b_path, a_path, 1.0 - label
            if self.use_hflip and np.random.uniform() < 0.5:
                img_a, img_b = img_a[:, ::-1], img_b[:, ::-1]
        return {
            'img_a': _bgr_to_tensor(img_a),
            'img_b': _bgr_to_tensor(img_b),
            'caption': self.captions[i],
            'label': torch.tensor(label, dtype=torch.float32),
            'source': pair.source,
            'confidence': 1.0 if pair.confidence is None else pair.confidence,
            'a_path': a_path,
            'b_path': b_path,
        }
