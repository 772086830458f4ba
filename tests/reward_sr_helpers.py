"""Tiny RewardSRModel / RewardSRGANModel option dicts and a batch of demo faces, built in memory."""
import copy
import os

import torch

from drward.data.demo_faces import demo_face_tensor

NETWORK_G = {'type': 'SRVGGNetCompact_basicsr', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_conv': 2,
             'upscale': 1, 'act_type': 'prelu'}


def make_opt(tmp_path, model_type='RewardSRModel', **train):
    """An option dict as BasicSR's parse_options makes it; ``train`` entries replace the defaults."""
    paths = {key: str(tmp_path / key) for key in ('models', 'training_states', 'visualization')}
    for path in paths.values():
        os.makedirs(path, exist_ok=True)
    opt = {
        'name': 'reward_sr_test', 'model_type': model_type, 'is_train': True, 'dist': False, 'rank': 0,
        'world_size': 1, 'num_gpu': 0, 'manual_seed': 0, 'scale': 1, 'network_g': copy.deepcopy(NETWORK_G),
        'path': {**paths, 'log': str(tmp_path), 'resume_state': None, 'pretrain_network_g': None},
        'train': {
            'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [10000], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            'reward_opt': {'type': 'RewardLoss', 'loss_weight': 0.05, 'frm': {'model_name': 'tiny'}},
            'frm_update': {'every': 2, 'optim': {'lr': 1e-4}},
            **train,
        },
    }
    return opt


def batch(n=4, size=32, noise=0.1):
    """Demo faces as GT, noisy copies as LQ, their captions."""
    gt = torch.stack([demo_face_tensor(size, i) for i in range(n)])
    g = torch.Generator().manual_seed(1)
    return {'lq': (gt + noise * torch.randn(gt.shape, generator=g)).clamp(0, 1), 'gt': gt,
            'caption': [f'a photo of a face {i}' for i in range(n)]}


def train(model, data, iters, start=1):
    logs = []
    for it in range(start, start + iters):
        model.feed_data(data)
        model.optimize_parameters(it)
        logs.append(dict(model.get_current_log()))
    return logs
