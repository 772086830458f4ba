"""Score a finished ReFL experiment: its restorer before and after training, with its final FRM."""
from __future__ import annotations

import copy
import os.path as osp
from typing import Dict, Mapping

import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset

from drward.archs.frm_arch import build_frm
from drward.archs.restorer import load_restorer_weights
from drward.models.reward_report import reward_before_after


def score_experiment(opt: Mapping, exp_dir: str, max_faces: int = 8) -> Dict[str, float]:
    """Build ``network_g`` as the option file does (the initial weights), load ``net_g_latest`` and
    ``net_frm_latest`` from ``exp_dir/models`` and compare on the first ``max_faces`` validation faces."""
    models = osp.join(exp_dir, 'models')
    restorer = build_network(copy.deepcopy(dict(opt['network_g'])))
    initial = {k: v.clone() for k, v in restorer.trained_state_dict().items()}
    load_restorer_weights(restorer, osp.join(models, 'net_g_latest.safetensors'))
    frm = build_frm({k: v for k, v in opt['train']['reward_opt']['frm'].items() if k != 'checkpoint'})
    frm.load_checkpoint(osp.join(models, 'net_frm_latest.pth'))
    val_opt = dict(copy.deepcopy(opt['datasets']['val']), phase='val', scale=1)
    dataset = build_dataset(val_opt)
    items = [dataset[i] for i in range(min(max_faces, len(dataset)))]
    lq, gt = (torch.stack([it[k] for it in items]) for k in ('lq', 'gt'))
    return reward_before_after(restorer, initial, frm, lq, gt, [it['caption'] for it in items])
