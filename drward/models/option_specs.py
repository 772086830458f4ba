"""The option-file check: BasicSR's own keys here, every drward component's keys from its class.

``tools/train.py`` and ``tools/test.py`` check the option file against :func:`schema_for` before anything is built
(:func:`check_option_file`): a wrong type, a value out of range or a misspelt key stops the run with one line naming
the file, the key and what is accepted.

The schema of a file is assembled from the model its ``model_type`` names (docs/design.md §3): the model class's
declarations (``options``, ``train_options``, ``val_options``: :func:`~drward.models.model_options.model_options`)
plus BasicSR's top-level keys below; ``network_g``, the losses, the rewards and the datasets are checked through
their registries against what each class declares. Only what has no drward class to sit beside is written here:
BasicSR's top-level keys (``name``, ``path``, ``logger``, ``dist_params``, ...) and BasicSR's own test datasets.

**Adding an option key**: declare it beside the class that reads it (``Option(spec, default, help)``).
``tests/test_option_schema.py`` tries a wrong type, an out-of-range value and a misspelling of every key of the real
option files, so a key used there without a spec fails that test.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping, Optional

from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

import drward.data  # noqa: F401  (registers the datasets)
import drward.losses  # noqa: F401  (registers the losses and the rewards)
import drward.models  # noqa: F401  (registers the models)
from drward.data.dataset_options import BASICSR_DATASET_OPTIONS, IO_BACKEND
from drward.models.model_options import model_options
from drward.utils.distributed import DIST_PARAMS_KEYS
from drward.utils.option_schema import ANY, Bool, ByRegistry, Choice, Int, MapOf, Num, OneOf, Section, Text, validate
from drward.utils.options import OptionError

PATH = Text(nullable=True)                 # a file or folder (existence is checked elsewhere: missing weights)

# ------------------------------------------------------------------------------------------------ datasets
#: BasicSR's own test datasets (no drward class to declare their keys).
_TEST_DATASET = Section({'name': Text(), 'type': Text(), 'dataroot_lq': PATH, 'dataroot_gt': PATH,
                         'filename_tmpl': Text(), 'io_backend': IO_BACKEND},
                        also=tuple(BASICSR_DATASET_OPTIONS) + ('meta_info_file', 'gt_size', 'use_rot', 'mean', 'std',
                                                                'color'))
#: A dataset by type: the keys its class declares (drward/data/), or BasicSR's test datasets above.
DATASET = ByRegistry(DATASET_REGISTRY, known={'PairedImageDataset': _TEST_DATASET,
                                              'SingleImageDataset': _TEST_DATASET})

# ------------------------------------------------------------------------------------------------ BasicSR's keys
LOGGER = Section({'print_freq': Int(1), 'save_checkpoint_freq': Int(1), 'use_tb_logger': Bool(), 'wandb': ANY})
DIST_PARAMS = Section({'backend': Choice('nccl', 'gloo'), 'port': Int(1, 65535),
                       'timeout_minutes': Num(0, lo_open=True)}, also=DIST_PARAMS_KEYS)
PATHS = Section({'pretrain_network_g': PATH, 'pretrain_network_frm': PATH, 'resume_state': PATH,
                 'param_key_g': Text(), 'strict_load_g': Bool(nullable=True), 'restored_root': PATH},
                also=('experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root',
                      'pretrain_network_d', 'param_key_d', 'strict_load_d', 'param_key_frm', 'strict_load_frm',
                      'root'))
#: Top-level keys BasicSR itself reads or adds (basicsr/utils/options.py and its pipelines).
BASICSR_TOP_KEYS = ('is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'root_path', 'datasets', 'path',
                    'logger', 'val', 'train', 'network_g', 'network_d', 'dist_params', 'host_packages')
_TOP = {'name': Text(), 'model_type': Text(), 'scale': Int(1), 'num_gpu': OneOf(Int(0), Choice('auto')),
        'manual_seed': Int(0, nullable=True), 'datasets': MapOf(DATASET), 'path': PATHS, 'logger': LOGGER,
        'dist_params': DIST_PARAMS, 'deterministic': Bool()}


def model_schema(cls: type) -> Optional[Section]:
    """The whole option file of the model class ``cls``: BasicSR's keys and what ``cls`` declares (None: nothing)."""
    own = model_options(cls)
    if not own:
        return None
    return Section({**_TOP, **{key: option.spec for key, option in own.items()}},
                   also=BASICSR_TOP_KEYS + tuple(own))


def schema_for(opt: Mapping[str, Any]) -> Optional[Section]:
    """The schema of an option file with this ``model_type``, or None when its model declares nothing (a host's
    model, left to BasicSR and its own checks)."""
    kind = opt.get('model_type') if isinstance(opt, Mapping) else None
    if not isinstance(kind, str) or kind not in MODEL_REGISTRY:
        return None
    cls = MODEL_REGISTRY.get(kind)
    return model_schema(cls) if isinstance(cls, type) else None


def check_option_file(opt: Optional[Mapping[str, Any]], source: str) -> None:
    """Raise :class:`~drward.utils.options.OptionError` (one line) when ``opt`` breaks its model type's schema."""
    if isinstance(opt, Mapping) and 'model_type' not in opt:  # BasicSR needs it; a misspelling names itself
        close = difflib.get_close_matches('model_type', [str(k) for k in opt], n=1)
        raise OptionError(f"{source}: {close[0]}: unknown key (did you mean 'model_type'?); model_type is required"
                          if close else f'{source}: model_type: missing; it is required (e.g. ReFLModel)')
    if isinstance(opt, Mapping):  # model_type picks the schema, so it is checked first
        validate({'model_type': opt['model_type']}, Section({'model_type': _TOP['model_type']}, open_keys=True),
                 source)
    schema = schema_for(opt or {})
    if schema is not None:
        validate(opt, schema, source)


__all__ = ['DATASET', 'BASICSR_TOP_KEYS', 'model_schema', 'schema_for', 'check_option_file']
