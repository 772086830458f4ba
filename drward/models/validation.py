"""Validation of a restorer inside training: LQ | restored | GT grids, BasicSR metrics, and the FRM's rewards.

Used by :class:`~drward.models.refl_model.ReFLModel` (and any model holding ``net_g`` as a drward Restorer).
Metrics come from the option file's ``val.metrics`` (BasicSR's METRIC_REGISTRY, drward's face metrics included);
``reward_restored`` / ``reward_gt`` (the mean score of the model's primary reward, ``reward_loss.primary``, a
:class:`~drward.archs.reward.Reward`: the FRM's cosine) and the reward-hacking monitor's ``hack_reward_gap`` /
``hack_hf_ratio`` (:mod:`drward.models.hack_monitor`) are added whenever the model holds a reward loss; the monitor's
thresholds are checked on them (stream ``val/<dataset>``).

In a multi-process run every rank restores its share of the faces (face ``i`` on rank ``i mod world``, seeded by
``i`` as in one process) and rank 0 sums every rank's sums: the table equals one process's up to the order of the
float sums, and no rank waits idle in the next step's collective while rank 0 alone validates (NCCL's timeout).
Rank 0 alone writes images, logs and checks the monitor; every rank returns the whole table.
"""
from __future__ import annotations

import os
import os.path as osp
from collections import OrderedDict
from copy import deepcopy
from typing import Dict

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img

from drward.archs.restorer import restore_seeded
from drward.metrics.metric_utils import release_gpu_metrics
from drward.models.hack_monitor import HackStats
from drward.models.model_options import METRICS
from drward.utils import distributed
from drward.utils.option_schema import Int, Option, resolve


class RestorationValidator:
    #: The ``val`` keys it reads (the model's ``val_options`` include them).
    options = {
        'seed': Option(Int(0), 0, 'face i of a validation set is restored with seed + i'),
        'metrics': Option(METRICS, None, "BasicSR metrics by name (METRIC_REGISTRY, drward's face metrics too)"),
    }

    def __init__(self, model) -> None:
        self.model = model

    def _grid(self, restored: torch.Tensor):
        """LQ | restored | GT side by side, as an 8-bit BGR image."""
        m = self.model
        panels = [m.lq, restored] + ([m.gt] if m.gt is not None else [])
        grid = torch.cat([p.detach().float().cpu() for p in panels], dim=-1)
        return tensor2img(list(grid), rgb2bgr=True)

    def _write_grids(self, dataset: str, current_iter: int, grids: list) -> None:
        """Rank 0 writes every rank's ``(name, image)`` grids (one gather per round of ``world`` faces)."""
        gathered = distributed.gather_by_rank(grids)
        if distributed.rank() != 0:
            return
        folder = osp.join(self.model.opt['path']['visualization'], dataset)
        os.makedirs(folder, exist_ok=True)
        for rank in sorted(gathered):
            for name, image in gathered[rank]:
                imwrite(image, osp.join(folder, f'{name}_{current_iter}.png'))

    def run(self, dataloader, current_iter: int, tb_logger, save_img: bool) -> Dict[str, float]:
        m = self.model
        val_opt = resolve(f'{type(m).__name__} val', self.options,
                          {k: v for k, v in (m.opt.get('val') or {}).items() if k in self.options})
        dataset = dataloader.dataset.opt['name']
        metric_opts = deepcopy(val_opt['metrics'] or {})
        sums: Dict[str, float] = OrderedDict((name, 0.0) for name in metric_opts)
        count = 0
        rewards = getattr(m, 'reward_loss', None)
        hack = HackStats() if rewards is not None else None
        was_training = m.net_g.training
        m.net_g.eval()
        rank, world = distributed.rank(), distributed.world_size()
        grids = []
        for idx, data in enumerate(dataloader):
            if save_img and idx and idx % world == 0:  # a round of world faces done: every rank is here
                self._write_grids(dataset, current_iter, grids)
                grids = []
            if idx % world != rank:  # another rank's face
                continue
            m.feed_data(data)
            restored = restore_seeded(m.net_g, m.lq, m.captions, val_opt['seed'] + idx)
            stem = osp.splitext(osp.basename(data['lq_path'][0]))[0] if 'lq_path' in data else f'{idx:04d}'
            if save_img:
                grids.append((stem, self._grid(restored)))
            for b in range(restored.shape[0]):
                if m.gt is not None:
                    pair = {'img': tensor2img(restored[b]), 'img2': tensor2img(m.gt[b])}
                    for name, opt_ in metric_opts.items():
                        sums[name] += float(calculate_metric(pair, opt_))
                count += 1
            if hack is not None and m.gt is not None:
                captions = rewards.captions_for(restored.shape[0], m.captions)
                hack.add(rewards.primary, m.hack_monitor.hf, restored, m.gt, captions)
        if save_img:
            self._write_grids(dataset, current_iter, grids)
        if was_training:
            m.net_g.train()
        sums, count = sum_over_ranks(sums, count, hack)
        results = OrderedDict((k, v / max(count, 1)) for k, v in sums.items())
        if hack is not None and hack.count:
            results.update(hack.result())
            if rank == 0:
                m.hack_monitor.check(results, current_iter, stream=f'val/{dataset}')
        if rank == 0:
            log_validation(dataset, current_iter, results, tb_logger)
        release_gpu_metrics()  # metric models built on the GPU would hold its memory through the training steps
        return results


def sum_over_ranks(sums: Dict[str, float], count: int, hack) -> tuple:
    """Every rank's metric ``sums`` and ``count`` (and :class:`HackStats` sums, in place) added up, on every rank."""
    if not distributed.is_dist():
        return sums, count
    shares = distributed.gather_by_rank((dict(sums), count, None if hack is None else (dict(hack.sums), hack.count)))
    total = OrderedDict((k, sum(shares[r][0][k] for r in sorted(shares))) for k in sums)
    if hack is not None:
        hack.sums = OrderedDict((k, sum(shares[r][2][0][k] for r in sorted(shares))) for k in hack.sums)
        hack.count = sum(shares[r][2][1] for r in shares)
    return total, sum(shares[r][1] for r in shares)


def log_validation(dataset: str, current_iter: int, results: Dict[str, float], tb_logger) -> None:
    """One log line and one tb scalar (``metrics/<dataset>/<name>``) per result."""
    message = f'Validation {dataset}, iter {current_iter}: ' + ', '.join(
        f'{k}: {v:.4f}' for k, v in results.items())
    get_root_logger().info(message)
    if tb_logger:
        for k, v in results.items():
            tb_logger.add_scalar(f'metrics/{dataset}/{k}', v, current_iter)
