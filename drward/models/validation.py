"""Validation of a restorer inside training: LQ | restored | GT grids, BasicSR metrics, and the FRM's rewards.

Used by :class:`~drward.models.refl_model.ReFLModel` (and any model holding ``net_g`` as a drward Restorer).
Metrics come from the option file's ``val.metrics`` (BasicSR's METRIC_REGISTRY, drward's face metrics included);
``reward_restored`` / ``reward_gt`` (mean FRM cosine) and the reward-hacking monitor's ``hack_reward_gap`` /
``hack_hf_ratio`` (:mod:`drward.models.hack_monitor`) are added whenever the model holds an FRM; the monitor's
thresholds are checked on them (stream ``val/<dataset>``).
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


class RestorationValidator:
    def __init__(self, model) -> None:
        self.model = model

    def _save_grid(self, dataset: str, name: str, current_iter: int, restored: torch.Tensor) -> None:
        m = self.model
        panels = [m.lq, restored] + ([m.gt] if m.gt is not None else [])
        grid = torch.cat([p.detach().float().cpu() for p in panels], dim=-1)  # LQ | restored | GT side by side
        folder = osp.join(m.opt['path']['visualization'], dataset)
        os.makedirs(folder, exist_ok=True)
        imwrite(tensor2img(list(grid), rgb2bgr=True), osp.join(folder, f'{name}_{current_iter}.png'))

    def run(self, dataloader, current_iter: int, tb_logger, save_img: bool) -> Dict[str, float]:
        m = self.model
        val_opt = m.opt.get('val') or {}
        dataset = dataloader.dataset.opt['name']
        metric_opts = deepcopy(val_opt.get('metrics') or {})
        sums: Dict[str, float] = OrderedDict((name, 0.0) for name in metric_opts)
        count = 0
        hack = HackStats() if m.frm is not None else None
        was_training = m.net_g.training
        m.net_g.eval()
        for idx, data in enumerate(dataloader):
            m.feed_data(data)
            restored = restore_seeded(m.net_g, m.lq, m.captions, int(val_opt.get('seed', 0)) + idx)
            stem = osp.splitext(osp.basename(data['lq_path'][0]))[0] if 'lq_path' in data else f'{idx:04d}'
            if save_img:
                self._save_grid(dataset, stem, current_iter, restored)
            for b in range(restored.shape[0]):
                if m.gt is not None:
                    pair = {'img': tensor2img(restored[b]), 'img2': tensor2img(m.gt[b])}
                    for name, opt_ in metric_opts.items():
                        sums[name] += float(calculate_metric(pair, opt_))
                count += 1
            if hack is not None and m.gt is not None:
                captions = m.criteria['l_reward'].captions_for(restored.shape[0], m.captions)
                hack.add(m.frm, m.hack_monitor.hf, restored, m.gt, captions)
        if was_training:
            m.net_g.train()
        results = OrderedDict((k, v / max(count, 1)) for k, v in sums.items())
        if hack is not None and hack.count:
            results.update(hack.result())
            m.hack_monitor.check(results, current_iter, stream=f'val/{dataset}')
        log_validation(dataset, current_iter, results, tb_logger)
        release_gpu_metrics()  # metric models built on the GPU would hold its memory through the training steps
        return results


def log_validation(dataset: str, current_iter: int, results: Dict[str, float], tb_logger) -> None:
    """One log line and one tb scalar (``metrics/<dataset>/<name>``) per result."""
    message = f'Validation {dataset}, iter {current_iter}: ' + ', '.join(
        f'{k}: {v:.4f}' for k, v in results.items())
    get_root_logger().info(message)
    if tb_logger:
        for k, v in results.items():
            tb_logger.add_scalar(f'metrics/{dataset}/{k}', v, current_iter)
