"""Did ReFL raise the reward? The restorer before and after training, scored by the same (final) FRM.

ReFL's FRM moves during training (the dynamic update makes it prefer GT), so rewards logged at different iterations
are scored by different FRMs. The fair comparison scores both generators with one FRM, on the same faces, noise and
stop step:  ``Δr = mean r_FRM(Î_trained) − mean r_FRM(Î_initial)``, plus the FRM's own view of the pairs
(Î_trained, I_GT): the share of pairs where it prefers GT.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Dict, Mapping, Optional, Sequence

import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset

from drward.archs.frm_arch import FaceRewardModel, build_frm
from drward.archs.restorer import Restorer, load_restorer_weights, restore_seeded


@torch.no_grad()
def reward_before_after(restorer: Restorer, initial_state: Mapping[str, torch.Tensor], frm: FaceRewardModel,
                        lq: torch.Tensor, gt: torch.Tensor, captions: Sequence[str], seed: int = 0,
                        train_path: bool = True) -> Dict[str, float]:
    """Mean FRM reward of the initial and trained restorer (same inputs), of GT, and the FRM's GT preference.

    ``train_path``: restore as a training step does (seeded stop step and η, ẑ_0 decoded); else inference.
    The restorer's trained weights are restored before returning.
    """
    trained_state = {k: v.detach().clone() for k, v in restorer.trained_state_dict().items()}
    captions = list(captions)
    grad_steps = 1 if train_path else 0
    after = restore_seeded(restorer, lq, captions, seed, grad_steps)
    restorer.load_trained_state_dict(initial_state)
    before = restore_seeded(restorer, lq, captions, seed, grad_steps)
    restorer.load_trained_state_dict(trained_state)
    logits = frm.preference_logits(after, gt, captions)
    return {
        'reward_initial': float(frm.similarity(before, captions).mean()),
        'reward_trained': float(frm.similarity(after, captions).mean()),
        'reward_gt': float(frm.similarity(gt, captions).mean()),
        'frm_prefers_gt': float((logits[:, 1] > logits[:, 0]).float().mean()),
    }


def format_report(report: Dict[str, float], title: Optional[str] = None) -> str:
    lines = [title] if title else []
    lines += ['| restorer | mean FRM reward |', '|---|---|',
              f"| initial | {report['reward_initial']:.4f} |", f"| after ReFL | {report['reward_trained']:.4f} |",
              f"| GT | {report['reward_gt']:.4f} |",
              f"\nFRM prefers GT over the ReFL output on {100 * report['frm_prefers_gt']:.0f} % of the pairs."]
    return '\n'.join(lines)


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
