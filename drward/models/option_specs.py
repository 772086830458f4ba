"""What each drward component accepts in an option file: types, ranges and choices, one block per component.

``tools/train.py`` and ``tools/test.py`` check the option file against :func:`schema_for` before anything is built
(:func:`check_option_file`): a wrong type, a value out of range or a misspelt key stops the run with one line naming
the file, the key and what is accepted. The components still check their own keys at construction; a key a
component accepts but that has no spec here yet is let through unchecked (``also=``: the component's own list).

**Adding an option key**: add it to its component's block below, e.g. ``'every': OneOf(Int(1), Choice('never'))``
in :data:`FRM_UPDATE`, next to adding it to the component's accepted keys. ``tests/test_option_schema.py`` tries a
wrong type, an out-of-range value and a misspelling of every key of the real option files, so a key used there
without a spec fails that test.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping, Optional

from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY

from drward.data.face_degradation_dataset import BASICSR_DATASET_KEYS
from drward.face.detect import DETECTOR_BACKENDS
import drward.losses  # noqa: F401  (registers the losses and the rewards)
from drward.models.dynamic_frm import FRM_UPDATE_KEYS
from drward.models.face_test_model import COMPARE_KEYS, FACE_ALIGN_KEYS, QUANTIZE_MODES, VAL_KEYS as TEST_VAL_KEYS
from drward.models.frm_model import TRAIN_KEYS as FRM_TRAIN_KEYS, VAL_KEYS as FRM_VAL_KEYS
from drward.models.hack_monitor import HACK_MONITOR_KEYS
from drward.models.refl_model import AUTOCAST_DTYPES, TRAIN_KEYS as REFL_TRAIN_KEYS
from drward.utils.distributed import DIST_PARAMS_KEYS
from drward.utils.options import OptionError
from drward.utils.option_schema import (ANY, Bool, ByRegistry, ByType, Choice, Int, ListOf, MapOf, Num, OneOf, Section,
                                        Text, validate)

PATH = Text(nullable=True)                 # a file or folder (existence is checked elsewhere: missing weights)
WEIGHT_DTYPE = Choice('auto', 'bf16', 'fp32')
PRECISION = Choice(*AUTOCAST_DTYPES, 'auto')
LR = Num(0, lo_open=True)
WEIGHT = Num(0)                             # a loss weight
RANGE = ListOf(Num(0), length=2)            # [low, high]

# ------------------------------------------------------------------------------------------------ datasets
_BASICSR_DATASET = {'name': Text(), 'type': Text(), 'use_hflip': Bool(), 'num_worker_per_gpu': Int(0),
                    'batch_size_per_gpu': Int(1), 'dataset_enlarge_ratio': Int(1),
                    'prefetch_mode': Choice('cpu', 'cuda', nullable=True),
                    'io_backend': Section({'type': Choice('disk', 'lmdb')}, open_keys=True)}
FACE_DEGRADATION_DATASET = Section({
    **_BASICSR_DATASET, 'dataroot_gt': PATH, 'gt_size': Int(8), 'fallback_caption': Text(),
    'caption_policy': Choice('fallback', 'strict'), 'seed': Int(0, nullable=True), 'demo_faces': Bool(),
    'mean': ListOf(Num(), length=3), 'std': ListOf(Num(0, lo_open=True), length=3),
    'blur_kernel_size': Int(1), 'kernel_list': ListOf(Choice('iso', 'aniso')), 'kernel_prob': ListOf(Num(0, 1)),
    'blur_sigma': RANGE, 'downsample_range': ListOf(Num(1), length=2), 'noise_range': RANGE,
    'jpeg_range': ListOf(Int(1, 100), length=2), 'max_image_pixels': Int(1, nullable=True)},
    also=BASICSR_DATASET_KEYS + (
    'meta_info_file', 'caption_file', 'max_bad_fraction', 'min_image_side', 'phase', 'scale'))
PREFERENCE_PAIR_DATASET = Section({
    **_BASICSR_DATASET, 'pairs_file': Text(), 'sources': ListOf(Choice('human', 'svm')),
    'min_confidence': Num(0, 1), 'image_size': Int(8), 'mean': ListOf(Num(), length=3),
    'std': ListOf(Num(0, lo_open=True), length=3), 'max_image_pixels': Int(1, nullable=True)},
    also=BASICSR_DATASET_KEYS + ('image_root', 'caption_file', 'phase', 'scale'))
_TEST_DATASET = Section({'name': Text(), 'type': Text(), 'dataroot_lq': PATH, 'dataroot_gt': PATH,
                         'filename_tmpl': Text(), 'io_backend': Section({'type': Choice('disk', 'lmdb')},
                                                                        open_keys=True)},
                         also=BASICSR_DATASET_KEYS + ('meta_info_file', 'gt_size', 'use_rot', 'mean', 'std', 'color'))
DATASET = ByType({'FaceDegradationDataset': FACE_DEGRADATION_DATASET,
                  'PreferencePairDataset': PREFERENCE_PAIR_DATASET,
                  'PairedImageDataset': _TEST_DATASET, 'SingleImageDataset': _TEST_DATASET})

# ------------------------------------------------------------------------------------------------ networks
#: The FRM of FRMModel, by type (FaceRewardModel declares its keys: drward/archs/frm_arch.py).
FRM_NETWORK = ByRegistry(ARCH_REGISTRY)
NETWORK_G = ByRegistry(ARCH_REGISTRY)

# ------------------------------------------------------------------------------------------------ train blocks
ADAMW = Section({'type': Choice('AdamW', 'Adam'), 'lr': LR, 'weight_decay': Num(0), 'betas': ListOf(Num(0, 1), 2),
                 'eps': Num(0, lo_open=True)})
#: A loss by type: the keys its class declares (e.g. RewardLoss and its reward entries, drward/losses/).
LOSSES = ByRegistry(LOSS_REGISTRY, nullable=True)
FRM_UPDATE = Section({'every': OneOf(Int(1), Choice('never'), bad=0), 'loss_weight': WEIGHT,
                      'reduction': Choice('mean', 'sum'), 'grad_clip': Num(0, lo_open=True, nullable=True),
                      'optim': ADAMW, 'enabled': Bool(), 'offload': Bool()},
                     also=FRM_UPDATE_KEYS)
HACK_MONITOR = Section({'gap_threshold': Num(), 'hf_ratio_threshold': Num(0, lo_open=True), 'patience': Int(1),
                        'enabled': Bool()}, also=HACK_MONITOR_KEYS)
SCHEDULER = ByType({
    'CosineAnnealingRestartLR': Section({'type': Text(), 'periods': ListOf(Int(1)),
                                         'restart_weights': ListOf(Num(0)), 'eta_min': Num(0)}),
    'MultiStepLR': Section({'type': Text(), 'milestones': ListOf(Int(1)), 'gamma': Num(0, lo_open=True)})})
_TRAIN = {'total_iter': Int(1), 'warmup_iter': Int(-1), 'mixed_precision': PRECISION,
          'shard_optimizer_states': Bool(), 'scheduler': SCHEDULER}
REFL_TRAIN = Section({
    **_TRAIN, 'grad_accum': Int(1), 'grad_accum_mode': Choice('mean', 'last_microbatch'), 'grad_steps': Int(1),
    'gradient_checkpointing': Bool(), 'optim_g': ADAMW, 'reg_opt': LOSSES, 'dwt_opt': LOSSES,
    'reward_opt': LOSSES, 'lpips_opt': LOSSES, 'frm_update': FRM_UPDATE, 'hack_monitor': HACK_MONITOR,
    'batched_prefix': Bool(), 'prefix_batch_size': Int(1, nullable=True), 'ema_decay': Num(0, 1)},
    also=REFL_TRAIN_KEYS)
FRM_TRAIN = Section({**_TRAIN, 'grad_clip': Num(0, lo_open=True, nullable=True), 'optim_frm': ADAMW,
                     'pref_opt': LOSSES, 'gradient_checkpointing': Bool()}, also=FRM_TRAIN_KEYS)

# ------------------------------------------------------------------------------------------------ val, logger, top
METRICS = MapOf(Section({'type': Text()}, open_keys=True))  # each metric function checks its own keys
REFL_VAL = Section({'val_freq': Int(1), 'save_img': Bool(), 'seed': Int(0), 'metrics': METRICS})
FRM_VAL = Section({'val_freq': Int(1), 'save_img': Bool(), 'val_at_start': Bool(), 'batch_size': Int(1),
                   'pbar': Bool()}, also=FRM_VAL_KEYS)
TEST_VAL = Section({
    'label': Text(), 'save_img': Bool(), 'grids': Int(0), 'pbar': Bool(), 'seed': Int(0),
    'quantize': Choice(*QUANTIZE_MODES), 'metrics': METRICS, 'batch_size': Int(1),
    'face_align': Section({'enabled': Bool(), 'face_size': Int(8), 'upscale': Int(1),
                           'select': Text(), 'detector': Choice(*DETECTOR_BACKENDS),
                           'weights_dir': PATH}, also=FACE_ALIGN_KEYS)}, also=TEST_VAL_KEYS)
LOGGER = Section({'print_freq': Int(1), 'save_checkpoint_freq': Int(1), 'use_tb_logger': Bool(), 'wandb': ANY})
DIST_PARAMS = Section({'backend': Choice('nccl', 'gloo'), 'port': Int(1, 65535),
                       'timeout_minutes': Num(0, lo_open=True)}, also=DIST_PARAMS_KEYS)
PATHS = Section({'pretrain_network_g': PATH, 'pretrain_network_frm': PATH, 'resume_state': PATH,
                 'param_key_g': Text(), 'strict_load_g': Bool(nullable=True)},
                also=('experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root',
                      'restored_root', 'pretrain_network_d', 'param_key_d', 'strict_load_d', 'param_key_frm',
                      'strict_load_frm', 'root'))
#: Top-level keys BasicSR itself reads or adds (basicsr/utils/options.py and its pipelines).
BASICSR_TOP_KEYS = ('is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'root_path', 'datasets', 'path',
                    'logger', 'val', 'train', 'network_g', 'network_d', 'dist_params', 'host_packages')
_TOP = {'name': Text(), 'model_type': Text(), 'scale': Int(1), 'num_gpu': OneOf(Int(0), Choice('auto')),
        'manual_seed': Int(0, nullable=True), 'datasets': MapOf(DATASET), 'path': PATHS, 'logger': LOGGER,
        'dist_params': DIST_PARAMS, 'deterministic': Bool()}
#: The whole option file, by ``model_type`` (other model types are left to BasicSR and their own checks).
MODELS = {
    'ReFLModel': Section({**_TOP, 'network_g': NETWORK_G, 'train': REFL_TRAIN, 'val': REFL_VAL},
                         also=BASICSR_TOP_KEYS),
    'FRMModel': Section({**_TOP, 'network_frm': FRM_NETWORK, 'train': FRM_TRAIN, 'val': FRM_VAL},
                        also=BASICSR_TOP_KEYS + ('network_frm',)),
    'FaceTestModel': Section({**_TOP, 'network_g': NETWORK_G, 'val': TEST_VAL,
                              'compare': Section({'label': Text(), 'pretrain_network_g': PATH, 'param_key_g': Text(),
                                                  'network_g': NETWORK_G}, also=COMPARE_KEYS)},
                             also=BASICSR_TOP_KEYS + ('compare',)),
}


def schema_for(opt: Mapping[str, Any]) -> Optional[Section]:
    """The schema of an option file with this ``model_type``, or None when drward has none for it."""
    return MODELS.get(opt.get('model_type')) if isinstance(opt, Mapping) else None


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


__all__ = ['MODELS', 'schema_for', 'check_option_file']
