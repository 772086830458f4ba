"""A pixel-space toy Restorer (tests only): proves ReFLModel drives any Restorer, fast on the CPU.

Latent = the image itself (3 channels). ε = frozen_net(z_t) + control(cat(z_t, c)), c = 2·lq − 1; the trained part is
``control``; a frozen copy of its initial weights gives the reference outputs for ``L_reg``.
"""
import copy
import time

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from drward.archs.restorer import RestoreOutput, Restorer
from drward.diffusion import row_noise
from drward.diffusion.ddim import TruncatedDDIMSampler


class ToyRestorer(Restorer):
    family = 'toy'
    is_tiny = True

    def __init__(self, num_steps: int = 10, stop_window: int = 2, seed=None, delay_s: float = 0.0):
        """``seed``: build the random weights from this seed (the same on every rank of a sharded run); ``delay_s``:
        sleep that long per restoration (a run slow enough to be killed in the middle)."""
        super().__init__()
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.frozen_net = nn.Conv2d(3, 3, 3, padding=1).requires_grad_(False)
            self.control = nn.Conv2d(6, 3, 3, padding=1)
        self.delay_s = float(delay_s)
        self.control_ref = copy.deepcopy(self.control).requires_grad_(False)
        self.sampler = TruncatedDDIMSampler(num_steps=num_steps, stop_window=stop_window)
        self.denoiser_calls_with_grad = 0

    def restore(self, lq, captions=None, grad_steps=0, generator=None, **sampling):
        cond = lq * 2 - 1
        pairs = []

        def denoise(z_t, t, with_grad):
            x = torch.cat([z_t, cond], dim=1)
            c = self.control(x)
            if with_grad:
                self.denoiser_calls_with_grad += 1
                with torch.no_grad():
                    pairs.append((c, self.control_ref(x)))
            return self.frozen_net(z_t) + c

        time.sleep(self.delay_s)
        z_T = row_noise.randn(lq.shape, generator).to(lq)  # a list of generators: one per row
        out = self.sampler.sample(denoise, z_T, grad_steps=grad_steps, generator=generator)
        return RestoreOutput(image=out.latent.clamp(-1, 1), reg_pairs=pairs, latent=out.latent,
                             info=out.log_info())

    def trainable_parameters(self):
        return iter(self.control.parameters())

    def trained_state_dict(self):
        return self.control.state_dict()

    def load_trained_state_dict(self, state, strict=True):
        self.control.load_state_dict(state, strict=strict)


if 'ToyRestorer' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(ToyRestorer)
