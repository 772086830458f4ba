"""The option keys every drward dataset shares: BasicSR's (its data pipeline reads or adds them) and the captions'.

A dataset declares its own keys beside itself (``options = {key: Option(spec, default, help)}``, docs/design.md §3)
on top of :data:`BASICSR_DATASET_OPTIONS`; it reads its option dict with :func:`dataset_options`, which checks the
keys and values (one line naming the dataset, the key and what is accepted) and fills in the declared defaults. A
subclass registered in one file inherits its parent's keys and adds its own.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from drward.data.bad_images import DEFAULT_MAX_BAD_FRACTION
from drward.utils.captions import DEFAULT_FALLBACK_CAPTION
from drward.utils.option_schema import Bool, Choice, Int, Num, Option, Section, Text, declared_options, resolve

CAPTION_POLICIES = ('fallback', 'strict')
#: ``io_backend``: BasicSR's file client (``type`` disk or lmdb; its other keys go to the client).
IO_BACKEND = Section({'type': Choice('disk', 'lmdb')}, open_keys=True)

#: Keys BasicSR itself reads or adds to a dataset's options (basicsr/utils/options.py, train.py, data/__init__.py).
BASICSR_DATASET_OPTIONS = {
    'name': Option(Text(), None, 'the dataset name (logs, result folders)'),
    'type': Option(Text(), None, 'the registered dataset class'),
    'phase': Option(Text(), None, 'set by BasicSR: train, val or test'),
    'scale': Option(Int(1), None, 'set by BasicSR from the top-level scale'),
    'use_hflip': Option(Bool(), False, 'random horizontal flips'),
    'num_worker_per_gpu': Option(Int(0), None, "BasicSR's DataLoader workers"),
    'batch_size_per_gpu': Option(Int(1), None, "BasicSR's batch size per process"),
    'dataset_enlarge_ratio': Option(Int(1), None, "BasicSR's EnlargedSampler ratio"),
    'prefetch_mode': Option(Choice('cpu', 'cuda', nullable=True), None, "BasicSR's prefetcher"),
    'num_prefetch_queue': Option(Int(1), None, "BasicSR's prefetch queue length"),
    'pin_memory': Option(Bool(), None, "BasicSR's DataLoader pin_memory"),
    'persistent_workers': Option(Bool(), None, "BasicSR's DataLoader persistent_workers"),
    'io_backend': Option(IO_BACKEND, None, 'disk (default) or lmdb'),
}
#: Keys of every captioned dataset.
CAPTION_OPTIONS = {
    'caption_file': Option(Text(nullable=True), None, 'captions (default: captions.* beside the images)'),
    'fallback_caption': Option(Text(), DEFAULT_FALLBACK_CAPTION, 'the caption of an item without one'),
    'caption_policy': Option(Choice(*CAPTION_POLICIES), 'fallback', 'strict: an item without a caption stops'),
    'max_bad_fraction': Option(Num(0, 1), DEFAULT_MAX_BAD_FRACTION, 'unreadable items tolerated before stopping'),
    'max_image_pixels': Option(Int(1, nullable=True), None, 'an image declaring more pixels is refused before '
                               'decoding; null: $DRWARD_MAX_IMAGE_PIXELS or 8192² (drward/utils/image_header.py)'),
}


def dataset_options(dataset: Any, opt: Mapping[str, Any]) -> Dict[str, Any]:
    """``opt`` checked against the keys ``type(dataset)`` declares, declared defaults filled in."""
    cls = type(dataset)
    return resolve(cls.__name__, declared_options(cls), opt, ignore=())


__all__ = ['CAPTION_POLICIES', 'IO_BACKEND', 'BASICSR_DATASET_OPTIONS', 'CAPTION_OPTIONS', 'dataset_options']
