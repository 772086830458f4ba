"""The truncated DDIM sampler shared by every restorer, SD's noise schedule and the colour fixes."""
from drward.diffusion.colorfix import adain_color_fix, dilated_binomial_blur, wavelet_color_fix, wavelet_low_pass
from drward.diffusion.ddim import (
                                   ChainDraws,
                                   DenoiseFn,
                                   PrefixState,
                                   SampleOutput,
                                   TruncatedDDIMSampler,
                                   ddim_sigma,
                                   ddim_update,
)
from drward.diffusion.schedule import leading_timesteps, predict_x0, sd_alphas_cumprod

__all__ = [
    'ChainDraws', 'DenoiseFn', 'PrefixState', 'SampleOutput', 'TruncatedDDIMSampler', 'ddim_sigma', 'ddim_update',
    'leading_timesteps', 'predict_x0', 'sd_alphas_cumprod',
    'adain_color_fix', 'dilated_binomial_blur', 'wavelet_color_fix', 'wavelet_low_pass',
]
