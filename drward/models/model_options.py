"""The option specs drward's models share, and how a model's declarations become its option-file sections.

A model declares its keys beside itself (docs/design.md §3), one attribute per section of the option file:

* ``options``: its top-level keys (``network_g``, ``network_frm``, ``compare``);
* ``train_options``: its ``train:`` keys, :data:`TRAIN_OPTIONS` (BasicSR's own and the shared precision keys)
  included;
* ``val_options``: its ``val:`` keys.

Each attribute maps a key to ``Option(spec, default, help)``; a subclass inherits its bases' keys section by section
(:func:`~drward.utils.option_schema.declared_options` on each attribute), so a model registered in one file that
subclasses ``ReFLModel`` and adds one ``train`` key declares only that key. The model reads a section with
:func:`section` (checked, declared defaults filled in); :func:`model_options` is what the option-file check
(``drward/models/option_specs.py``) assembles.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from basicsr.utils.registry import LOSS_REGISTRY

from drward.utils.option_schema import (
    Bool,
    ByRegistry,
    ByType,
    Choice,
    Int,
    ListOf,
    MapOf,
    Num,
    Option,
    Section,
    Text,
    declared_options,
    group,
    resolve,
)

#: The option-file section of each declaring attribute.
SECTION_ATTRIBUTES = {'train': 'train_options', 'val': 'val_options'}

#: ``train.mixed_precision``: the autocast dtype of each accepted value (fp16 would need a gradient scaler).
AUTOCAST_DTYPES = {'no': None, 'bf16': torch.bfloat16}

LR = Num(0, lo_open=True)
#: An optimiser section (``type`` and torch's AdamW keys); a model's default fills in the keys not given.
ADAMW = Section({'type': Choice('AdamW', 'Adam'), 'lr': LR, 'weight_decay': Num(0), 'betas': ListOf(Num(0, 1), 2),
                 'eps': Num(0, lo_open=True)})
#: A loss by ``type:``: the keys its class declares (e.g. RewardLoss and its reward entries, drward/losses/).
LOSS = ByRegistry(LOSS_REGISTRY, nullable=True)
#: BasicSR's schedulers (basicsr/models/lr_scheduler.py).
SCHEDULER = ByType({
    'CosineAnnealingRestartLR': Section({'type': Text(), 'periods': ListOf(Int(1)),
                                         'restart_weights': ListOf(Num(0)), 'eta_min': Num(0)}),
    'MultiStepLR': Section({'type': Text(), 'milestones': ListOf(Int(1)), 'gamma': Num(0, lo_open=True)})})
#: ``val.metrics``: each metric function checks its own keys.
METRICS = MapOf(Section({'type': Text()}, open_keys=True))

#: The ``train`` keys of every drward model: BasicSR's (its training loop reads them) and the precision keys.
TRAIN_OPTIONS = {
    'total_iter': Option(Int(1), None, "BasicSR: the number of iterations"),
    'warmup_iter': Option(Int(-1), -1, 'BasicSR: linear learning-rate warm-up iterations (-1: none)'),
    'scheduler': Option(SCHEDULER, None, "BasicSR's learning-rate scheduler (none: constant)"),
    'mixed_precision': Option(Choice(*AUTOCAST_DTYPES, 'auto'), 'no', "autocast dtype of the forward passes; auto: "
                              'bf16 where the device runs it natively, else none'),
    'shard_optimizer_states': Option(Bool(), False, 'split the AdamW states across the ranks (ZeRO-1)'),
}

#: The ``val`` keys BasicSR's validation loop reads.
VAL_OPTIONS = {
    'val_freq': Option(Int(1), None, 'BasicSR: validate every val_freq iterations'),
    'save_img': Option(Bool(), False, 'write the validation images'),
}


def model_options(cls: type) -> Dict[str, Option]:
    """The top-level option keys ``cls`` declares, its ``train`` and ``val`` sections included (empty: none)."""
    out = dict(declared_options(cls))
    for key, attribute in SECTION_ATTRIBUTES.items():
        own = declared_options(cls, attribute)
        if own:
            out[key] = Option(group(own), None, f'{cls.__name__} {key} settings')
    return out


def section(model: Any, key: str, given: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The ``key`` section (``train``, ``val``) of ``model``'s option file, checked against the keys its class
    declares and completed with their defaults; one-line :class:`~drward.utils.options.OptionError` otherwise."""
    cls = type(model)
    return resolve(f'{cls.__name__} {key}', declared_options(cls, SECTION_ATTRIBUTES[key]), given, ignore=())


__all__ = ['SECTION_ATTRIBUTES', 'AUTOCAST_DTYPES', 'LR', 'ADAMW', 'LOSS', 'SCHEDULER', 'METRICS', 'TRAIN_OPTIONS',
           'VAL_OPTIONS', 'model_options', 'section']
