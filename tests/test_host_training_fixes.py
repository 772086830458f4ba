"""What lets a host's BasicSR training (GFPGAN's) run from tools/train.py on a CPU stack: host_packages, the native
fused leaky ReLU, float Adam betas, and CompositeLoss writing its terms to the log."""
import logging

import pytest
import torch
from basicsr.archs.stylegan2_arch import StyleGAN2Discriminator
from basicsr.losses import build_loss
from basicsr.models.base_model import BaseModel

from drward.models.cli import import_host_packages
from drward.utils import basicsr_compat


def test_native_fused_leaky_relu_adds_the_bias_per_channel_then_scales_the_leaky_relu():
    x = torch.tensor([[[[1.0, -2.0]], [[0.5, -0.5]]]])  # (1, 2, 1, 2)
    bias = torch.tensor([1.0, -1.0])
    out = basicsr_compat.native_fused_leaky_relu(x, bias, negative_slope=0.2, scale=2.0)
    # channel 0: x + 1 = [2, -1] -> [2, -0.2] · 2;  channel 1: x - 1 = [-0.5, -1.5] -> [-0.1, -0.3] · 2
    torch.testing.assert_close(out, torch.tensor([[[[4.0, -0.4]], [[-0.2, -0.6]]]]))
    linear = basicsr_compat.native_fused_leaky_relu(torch.tensor([[-1.0, 3.0]]), torch.zeros(2))  # EqualLinear's 2-D
    torch.testing.assert_close(linear, torch.tensor([[-0.2, 3.0]]) * 2 ** 0.5)


def test_basicsr_stylegan2_discriminator_trains_on_the_cpu_after_install():
    basicsr_compat.install()
    net = StyleGAN2Discriminator(out_size=16, channel_multiplier=1, narrow=0.03125)
    images = torch.randn(4, 3, 16, 16)
    net(images).mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_integer_betas_reach_adam_as_floats():
    basicsr_compat.install()
    optimiser = BaseModel.get_optimizer(None, 'Adam', [torch.nn.Parameter(torch.zeros(1))], 1e-3, betas=(0, 0.99))
    assert optimiser.param_groups[0]['betas'] == (0.0, 0.99)
    assert BaseModel.get_optimizer is basicsr_compat.float_betas(BaseModel.get_optimizer)  # installing twice wraps once


def test_host_packages_import_or_stop_with_one_line():
    assert import_host_packages({'host_packages': ['json']}) == ['json'] and import_host_packages({}) == []
    with pytest.raises(SystemExit, match="cannot import 'no_such_host_pkg'"):
        import_host_packages({'host_packages': ['no_such_host_pkg']})
    with pytest.raises(SystemExit, match='a list of package names'):
        import_host_packages({'host_packages': 'gfpgan'})


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_composite_loss_writes_its_terms_every_n_calls():
    loss = build_loss({'type': 'CompositeLoss', 'log_every': 2, 'losses': [
        {'type': 'L1Loss', 'loss_weight': 1.0}, {'type': 'MSELoss', 'loss_weight': 0.5}]})
    handler, logger = Collect(), logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # BasicSR sets INFO only with a log file (training runs have one)
    try:
        pred, target = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
        for _ in range(5):
            loss(pred, target)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    terms = [line for line in handler.lines if line.startswith('CompositeLoss terms')]
    assert terms == ['CompositeLoss terms (call 2): L1Loss 1.0000e+00, MSELoss 5.0000e-01',
                     'CompositeLoss terms (call 4): L1Loss 1.0000e+00, MSELoss 5.0000e-01']
    with pytest.raises(ValueError, match=r'^CompositeLoss: log_every: got -1 \(int\); accepted: an integer >= 0'):
        build_loss({'type': 'CompositeLoss', 'log_every': -1, 'losses': [{'type': 'L1Loss'}]})


def test_progress_line_eta_is_zero_on_the_last_iteration_not_minus_one_day(monkeypatch, caplog):
    import basicsr.train
    import basicsr.utils.logger as basicsr_logger
    basicsr_compat.install()
    assert basicsr.train.MessageLogger is basicsr_compat.EtaMessageLogger
    clock = iter([100.0, 110.0, 120.0])  # start; iteration 1 logged 10 s in; the last one (2) 20 s in
    monkeypatch.setattr(basicsr_logger.time, 'time', lambda: next(clock))
    opt = {'name': 'eta', 'logger': {'print_freq': 1, 'use_tb_logger': False}, 'train': {'total_iter': 2}}
    logger = basicsr_compat.EtaMessageLogger(opt, start_iter=0)
    messages = []
    monkeypatch.setattr(logger.logger, 'info', messages.append)
    for it in (1, 2):
        logger({'epoch': 0, 'iter': it, 'lrs': [1e-4], 'time': 10.0, 'data_time': 0.0})
    assert '[eta: 0:00:05, ' in messages[0]  # one iteration left at BasicSR's mean (10 s over its count of 2)
    assert '[eta: 0:00:00, ' in messages[1]  # BasicSR's own: '-1 day, 23:59:50'
