"""FaceDegradationDataset: HQ faces + captions → (LQ, GT, caption) with the paper's synthetic degradation.

Each item is ``I_GT`` (the HQ face resized to ``gt_size²``), ``I_LQ = degrade(I_GT)`` (:mod:`drward.data.degrade`:
blur k_σ, downsample r, noise δ, JPEG q, resize back; docs/design.md §1) and the caption for the FRM's text side.

Options (BasicSR dataset options; BasicSR's own keys such as ``phase``, ``batch_size_per_gpu`` are accepted too):

* ``io_backend``: ``{type: disk}`` (default) or ``{type: lmdb}`` (:mod:`drward.data.image_source`, BasicSR's
  ``FileClient``);
* ``dataroot_gt``: folder of HQ faces, and/or ``meta_info_file``: a list of image paths (relative to
  ``dataroot_gt`` when given, else to the meta file's folder); with lmdb, ``dataroot_gt`` is the lmdb folder
  (GFPGAN's ``datasets/ffhq/ffhq_512.lmdb``) and the keys come from its ``meta_info.txt`` (or ``meta_info_file``);
* ``gt_size`` (512): side of the square HQ face (centre-crop, then resize);
* ``caption_file`` (optional, JSON or TSV) and ``fallback_caption``; per image, ``<stem>.txt`` beside it wins;
  with lmdb the caption file is keyed by the lmdb keys and defaults to ``<lmdb>/captions.tsv`` when that exists;
  ``caption_policy``: ``fallback`` (default: an image without a caption gets ``fallback_caption``, counted in the
  log) or ``strict`` (the authors' code: a missing caption is an error; here raised at construction, naming the
  first such image, instead of mid-run when the loader reaches it);
* the degradation ranges of :class:`~drward.data.degrade.DegradationSettings` (paper defaults);
* ``use_hflip``: random horizontal flip of the HQ face; ``seed``: when set, item ``i`` is the same every time
  (validation); ``demo_faces: true``: if ``dataroot_gt`` does not exist, write the bundled demo faces there first;
* ``max_bad_fraction`` (0.1), ``min_image_side`` (16): an unreadable, truncated or smaller image is skipped with a
  warning naming it (:mod:`drward.data.bad_images`); more than that fraction of bad files stops the run;
* ``mean`` / ``std`` (BasicSR's keys, per RGB channel): ``lq`` and ``gt`` become ``(x − mean) / std``; GFPGAN's and
  CodeFormer's ``[0.5, 0.5, 0.5]`` for both give [-1, 1].
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from drward.data import image_io
from drward.data.bad_images import BadImageGuard
from drward.data.dataset_options import BASICSR_DATASET_OPTIONS, CAPTION_OPTIONS, dataset_options
from drward.data.degrade import DegradationSettings, degrade, seeded_global_rng
from drward.data.demo_faces import ensure_demo_faces
from drward.data.image_source import ImageSource
from drward.utils.captions import DEFAULT_FALLBACK_CAPTION  # noqa: F401  (re-exported: older imports)
from drward.utils.option_schema import Bool, Int, ListOf, Num, Option, Text
from drward.utils.options import OptionError
from drward.utils.registry import register
from drward.utils.resumable_sampler import SampleKey, sample_seed

#: Default ``min_image_side``: a face under 16 pixels a side holds nothing to restore.
DEFAULT_MIN_IMAGE_SIDE = 16


@register(DATASET_REGISTRY)
class FaceDegradationDataset(data.Dataset):
    """HQ face folder → ``{'lq', 'gt', 'caption', 'lq_path', 'gt_path'}`` with LQ made on the fly.

    ``lq`` and ``gt`` are ``(3, gt_size, gt_size)`` float32 RGB in [0, 1] (``(x − mean) / std`` when ``mean`` and
    ``std`` are set). ``lq_path`` equals ``gt_path`` (the LQ is synthetic; BasicSR's validation names its outputs
    after ``lq_path``).
    """

    #: Its option keys (docs/design.md §3): BasicSR's, the captions', its own and the degradation ranges.
    options = {
        **BASICSR_DATASET_OPTIONS, **CAPTION_OPTIONS,
        'dataroot_gt': Option(Text(nullable=True), None, 'folder (or lmdb) of HQ faces'),
        'meta_info_file': Option(Text(nullable=True), None, 'list of the face files to use'),
        'gt_size': Option(Int(8), 512, 'faces are resized to gt_size x gt_size'),
        'seed': Option(Int(0, nullable=True), None, 'fixed degradations per item (validation; ~: random)'),
        'demo_faces': Option(Bool(), False, 'write the bundled demo faces to dataroot_gt when it is missing'),
        'mean': Option(ListOf(Num(), length=3, nullable=True), None, '(x - mean) / std normalisation, with std'),
        'std': Option(ListOf(Num(0, lo_open=True), length=3, nullable=True), None, 'with mean'),
        'min_image_side': Option(Int(1), DEFAULT_MIN_IMAGE_SIDE, 'smaller images are skipped as unreadable'),
        **DegradationSettings.declared(),
    }

    def __init__(self, opt: Mapping[str, Any]) -> None:
        super().__init__()
        self.opt = dict(opt)  # BasicSR models read dataloader.dataset.opt["name"]
        opt = dataset_options(self, opt)
        self.gt_size = opt['gt_size']
        self.use_hflip = opt['use_hflip']
        self.seed: Optional[int] = opt['seed']
        self.fallback_caption = opt['fallback_caption']
        self.caption_policy = opt['caption_policy']
        self.settings = DegradationSettings.from_options(opt)
        self.stats = channel_stats(opt['mean'], opt['std'])
        self.source = self._open_source(opt)
        self.gt_paths = self.source.names(opt['meta_info_file'])  # disk: file paths; lmdb: keys
        caption_file = opt['caption_file'] or self.source.default_caption_file()
        self.captions = self._resolve_captions(caption_file)
        get_root_logger().info(f'FaceDegradationDataset: {len(self.gt_paths)} faces from {self.source.backend} '
                               f'{opt.get("dataroot_gt") or opt.get("meta_info_file")}, captions from '
                               f'{caption_file or "-"}' + (' and <stem>.txt files' if not self.source.is_lmdb else ''))
        self.min_image_side = opt['min_image_side']
        self.guard = BadImageGuard('FaceDegradationDataset', self.gt_paths, opt['max_bad_fraction'])

    def _open_source(self, opt: Mapping[str, Any]) -> ImageSource:
        """Where the faces are read from (writing the demo faces first when asked)."""
        root, meta_file = opt['dataroot_gt'], opt['meta_info_file']
        if root is None and meta_file is None:
            raise image_io.ImageListError('FaceDegradationDataset needs dataroot_gt (a folder) or meta_info_file')
        lmdb = (opt['io_backend'] or {}).get('type') == 'lmdb'
        if root is not None and opt['demo_faces'] and not os.path.exists(root):
            if lmdb:
                raise OptionError(f'FaceDegradationDataset: demo_faces writes image files, not an lmdb; {root} does '
                                  'not exist (make it with tools/make_lmdb.py)')
            ensure_demo_faces(root, size=self.gt_size)
            get_root_logger().info(f'FaceDegradationDataset: wrote the bundled demo faces to {root} '
                                   '(real low-resolution photos for plumbing/demos; see drward/data/demo_faces.py)')
        return ImageSource('FaceDegradationDataset', opt['io_backend'], root, opt['max_image_pixels'])

    def _resolve_captions(self, caption_file: Optional[str]) -> List[str]:
        """One caption per image: ``<stem>.txt`` beside it (disk), else the caption file, else the fallback
        (counted)."""
        mapping = image_io.read_caption_file(caption_file) if caption_file else {}
        found = [self.source.caption(name, mapping) for name in self.gt_paths]
        captions, self.fallback_count = fill_missing_captions('FaceDegradationDataset', found,
                                                              self.fallback_caption, 'images',
                                                              policy=self.caption_policy, names=self.gt_paths)
        return captions

    def __len__(self) -> int:
        return len(self.gt_paths)

    def item_seed(self, index: int) -> Optional[int]:
        """The RNG seed of item ``index``: a hash of ``(seed, index)`` with the ``seed`` option (validation: the same
        LQ every time); else, for a training draw from :class:`~drward.utils.resumable_sampler.ResumableSampler`, a
        hash of the run's ``(seed, epoch, position)``; else None (the global RNGs, BasicSR's way)."""
        if self.seed is not None:
            return int(np.random.SeedSequence([int(self.seed), int(index)]).generate_state(1)[0])
        if isinstance(index, SampleKey):
            return sample_seed(index)
        return None

    def _read_gt(self, i: int) -> np.ndarray:
        return image_io.fit_square(self.source.read(self.gt_paths[i], self.min_image_side), self.gt_size)

    def normalised(self, img: torch.Tensor) -> torch.Tensor:
        return img if self.stats is None else (img - self.stats[0]) / self.stats[1]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        i, img_gt = self.guard.read(index, self._read_gt)  # a bad file: warned about, the next one is used
        gt_path = self.gt_paths[i]
        with seeded_global_rng(self.item_seed(index)):
            if self.use_hflip and np.random.uniform() < 0.5:
                img_gt = np.ascontiguousarray(img_gt[:, ::-1])
            img_lq, _ = degrade(img_gt, self.settings)
        return {
            'lq': self.normalised(_bgr_to_tensor(img_lq)),
            'gt': self.normalised(_bgr_to_tensor(img_gt)),
            'caption': self.captions[i],
            'lq_path': gt_path,
            'gt_path': gt_path,
        }


def channel_stats(mean: Optional[Sequence[float]],
                  std: Optional[Sequence[float]]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(mean, std)`` as ``(3, 1, 1)`` tensors for ``x ↦ (x − mean) / std`` (BasicSR's ``normalize``); None when
    both are None."""
    if mean is None and std is None:
        return None
    if mean is None or std is None or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f'FaceDegradationDataset: mean and std go together, 3 values each (std > 0); '
                         f'got mean={mean!r}, std={std!r}')
    return tuple(torch.tensor(v, dtype=torch.float32).view(3, 1, 1) for v in (mean, std))


def _bgr_to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` BGR float → ``(3, H, W)`` float32 RGB tensor."""
    return torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1), dtype=np.float32))


class MissingCaptionError(ValueError):
    """``caption_policy: strict`` and an item has no caption; the message names the file."""


def fill_missing_captions(owner: str, captions: Sequence[Optional[str]], fallback: str, noun: str,
                          policy: str = 'fallback', names: Optional[Sequence[str]] = None) -> Tuple[List[str], int]:
    """``(captions with each missing one (None) replaced by fallback, how many were missing)``; logs that count.

    ``policy='strict'`` raises :class:`MissingCaptionError` instead, naming the first item without a caption
    (``names[i]``: its image file) and how many lack one.
    """
    missing = [i for i, caption in enumerate(captions) if caption is None]
    if missing and policy == 'strict':
        first = names[missing[0]] if names is not None else f'item {missing[0]}'
        raise MissingCaptionError(f'{owner}: no caption for {first}; {len(missing)} of {len(captions)} {noun} lack '
                                  'one and caption_policy is strict (fallback captions them with fallback_caption)')
    if missing:
        get_root_logger().info(f'{owner}: {len(missing)} of {len(captions)} {noun} have no caption; '
                               f'using the fallback caption "{fallback}"')
    return [fallback if caption is None else caption for caption in captions], len(missing)
