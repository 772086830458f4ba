"""The truncated DDIM sampler (drward/diffusion): schedule, inference against diffusers, the gradient window."""
from typing import List, Tuple

import pytest
import torch
from torch import nn

from drward.diffusion import SampleOutput, TruncatedDDIMSampler, leading_timesteps, predict_x0, sd_alphas_cumprod

LATENT_SHAPE = (2, 4, 8, 8)


class ToyEpsNet(nn.Module):
    """A fixed small conv net with a timestep term: ε = tanh(conv(z)) + 0.1·sin(t / 100)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time_term = 0.1 * torch.sin(t.to(z.dtype) / 100).view(-1, 1, 1, 1)
        return torch.tanh(self.conv(z)) + time_term


class RecordingDenoiser:
    """Wraps ToyEpsNet as a DenoiseFn and records every call: (z_t, t, with_grad, grad enabled, ε)."""

    def __init__(self, net: ToyEpsNet, out_dtype: torch.dtype = torch.float32) -> None:
        self.net, self.out_dtype = net, out_dtype
        self.calls: List[Tuple[torch.Tensor, torch.Tensor, bool, bool, torch.Tensor]] = []

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor, with_grad: bool) -> torch.Tensor:
        eps = self.net(z_t, t).to(self.out_dtype)
        self.calls.append((z_t, t, with_grad, torch.is_grad_enabled(), eps))
        return eps

    def grad_calls(self) -> list:
        return [call for call in self.calls if call[3]]


def diffusers_scheduler():
    from diffusers import DDIMScheduler
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012,
                         steps_offset=1, timestep_spacing='leading', set_alpha_to_one=False, clip_sample=False)


def z_T(seed: int = 1) -> torch.Tensor:
    return torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(seed))


def test_timesteps_equal_diffusers_ddim_leading_offset_one():
    scheduler = diffusers_scheduler()
    scheduler.set_timesteps(50)
    sampler = TruncatedDDIMSampler(num_steps=50)
    assert torch.equal(sampler.timesteps, scheduler.timesteps.to(torch.int64))
    assert sampler.timesteps[0] == 981 and sampler.timesteps[-1] == 1


def test_alphas_cumprod_equal_diffusers_scaled_linear():
    expected = diffusers_scheduler().alphas_cumprod.double()
    actual = sd_alphas_cumprod()
    assert actual.dtype == torch.float64 and actual.shape == (1000,)
    # ours is a float64 cumulative product, diffusers' float32: float32 rounding accumulated over 1000 factors
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def run_diffusers_loop(net: ToyEpsNet, z: torch.Tensor, eta: float, generator=None) -> torch.Tensor:
    scheduler = diffusers_scheduler()
    scheduler.set_timesteps(50)
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = net(z, t.expand(z.shape[0]))
            z = scheduler.step(eps, t, z, eta=eta, generator=generator).prev_sample
    return z


def test_inference_with_eta_zero_equals_diffusers_ddim_loop():
    net = ToyEpsNet()
    expected = run_diffusers_loop(net, z_T(), eta=0.0)
    out = TruncatedDDIMSampler().sample(RecordingDenoiser(net), z_T(), grad_steps=0, eta=0.0)
    # diffusers updates with float32 ᾱ, we with float64 ᾱ: the two loops differ by float32 rounding only
    torch.testing.assert_close(out.latent, expected, rtol=1e-5, atol=1e-5)


def test_inference_with_eta_one_equals_diffusers_given_the_same_noise_stream():
    net = ToyEpsNet()
    expected = run_diffusers_loop(net, z_T(), eta=1.0, generator=torch.Generator().manual_seed(7))
    out = TruncatedDDIMSampler().sample(RecordingDenoiser(net), z_T(), generator=torch.Generator().manual_seed(7))
    assert out.eta == 1.0  # eta_infer default
    # diffusers keeps ᾱ in float32, we in float64; the injected noise amplifies that to ~2e-5
    torch.testing.assert_close(out.latent, expected, rtol=1e-4, atol=1e-4)


def test_inference_runs_every_step_without_gradient():
    denoiser = RecordingDenoiser(ToyEpsNet())
    out = TruncatedDDIMSampler().sample(denoiser, z_T(), generator=torch.Generator().manual_seed(0))
    assert len(denoiser.calls) == 50 and not denoiser.grad_calls()
    assert not any(call[2] for call in denoiser.calls)
    assert out.latent.grad_fn is None and out.grad_calls == 0
    assert (out.stop_index, out.stop_timestep) == (49, 1)


def test_stop_step_returns_x0_prediction_of_its_input_and_eps():
    sampler = TruncatedDDIMSampler()
    denoiser = RecordingDenoiser(ToyEpsNet())
    out = sampler.sample(denoiser, z_T(), grad_steps=1, stop_index=48, generator=torch.Generator().manual_seed(0))
    z_t, t, _, _, eps = denoiser.calls[-1]
    assert out.stop_timestep == 21 and int(t[0]) == 21 and len(denoiser.calls) == 49
    alpha = sd_alphas_cumprod()[21].item()
    expected = (z_t - (1 - alpha) ** 0.5 * eps) / alpha ** 0.5
    torch.testing.assert_close(out.latent, expected)


def test_predict_x0_inverts_forward_noising_with_scalar_and_per_sample_alpha():
    x0, eps = torch.randn(LATENT_SHAPE), torch.randn(LATENT_SHAPE)
    alpha = torch.tensor([0.3, 0.9], dtype=torch.float64)
    z_t = alpha.sqrt().float().view(-1, 1, 1, 1) * x0 + (1 - alpha).sqrt().float().view(-1, 1, 1, 1) * eps
    # z_t was rounded to float32 from float64 ᾱ; inverting it recovers x0 up to that rounding
    torch.testing.assert_close(predict_x0(z_t, eps, alpha), x0, rtol=1e-5, atol=1e-5)
    z_999 = 0.5 ** 0.5 * x0 + 0.5 ** 0.5 * eps
    # ε in bfloat16 (8-bit mantissa: ~4e-3 relative), divided by √ᾱ ≈ 0.7: a few 1e-3 on values of order 1
    torch.testing.assert_close(predict_x0(z_999, eps.bfloat16(), 0.5).float(), x0, rtol=2e-2, atol=2e-2)
    assert predict_x0(z_999, eps.bfloat16(), 0.5).dtype == torch.float32


def test_n1_runs_one_grad_call_on_a_detached_input_and_reaches_the_parameters():
    net = ToyEpsNet()
    denoiser = RecordingDenoiser(net)
    out = TruncatedDDIMSampler().sample(denoiser, z_T(), grad_steps=1, generator=torch.Generator().manual_seed(3))
    grad_calls = denoiser.grad_calls()
    assert len(grad_calls) == 1 and out.grad_calls == 1
    z_in, _, with_grad, _, _ = grad_calls[0]
    assert with_grad and z_in.grad_fn is None and not z_in.requires_grad
    assert all(call[4].grad_fn is None for call in denoiser.calls[:-1])  # the prefix kept no graph
    out.latent.square().mean().backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.abs().sum() > 0


def test_n3_keeps_the_graph_over_the_last_three_calls():
    denoiser = RecordingDenoiser(ToyEpsNet())
    out = TruncatedDDIMSampler().sample(denoiser, z_T(), grad_steps=3, stop_index=49,
                                        generator=torch.Generator().manual_seed(3))
    grad_calls = denoiser.grad_calls()
    assert len(grad_calls) == 3 and out.grad_calls == 3 and len(denoiser.calls) == 50
    assert [int(call[1][0]) for call in grad_calls] == [41, 21, 1]
    first_input, later_inputs = grad_calls[0][0], [call[0] for call in grad_calls[1:]]
    assert first_input.grad_fn is None and all(z.grad_fn is not None for z in later_inputs)
    # the graph reaches back through both DDIM updates to the first grad call's output
    grad_first_eps = torch.autograd.grad(out.latent.sum(), grad_calls[0][4])[0]
    assert grad_first_eps.abs().sum() > 0


def test_grad_steps_beyond_the_stop_index_keep_the_whole_chain():
    sampler = TruncatedDDIMSampler(num_steps=5)
    denoiser = RecordingDenoiser(ToyEpsNet())
    out = sampler.sample(denoiser, z_T(), grad_steps=10, stop_index=3, eta=0.0)
    assert out.grad_calls == 4 == len(denoiser.grad_calls()) == len(denoiser.calls)


def test_stop_index_lies_in_the_last_window_and_covers_it():
    sampler = TruncatedDDIMSampler(num_steps=50, stop_window=2)
    drawn = {sampler.draw_stop_index(torch.Generator().manual_seed(seed)) for seed in range(40)}
    assert drawn == {48, 49}
    wide = TruncatedDDIMSampler(num_steps=10, stop_window=4)
    assert {wide.draw_stop_index(torch.Generator().manual_seed(s)) for s in range(60)} == {6, 7, 8, 9}
    out = sampler.sample(RecordingDenoiser(ToyEpsNet()), z_T(), grad_steps=1)
    assert out.stop_index in (48, 49) and out.stop_timestep == int(sampler.timesteps[out.stop_index])


def sample_training(seed: int) -> SampleOutput:
    return TruncatedDDIMSampler(num_steps=10).sample(RecordingDenoiser(ToyEpsNet()), z_T(), grad_steps=1,
                                                     generator=torch.Generator().manual_seed(seed))


def test_same_seed_gives_identical_output_and_different_seed_differs():
    first, again, other = sample_training(5), sample_training(5), sample_training(6)
    assert torch.equal(first.latent, again.latent) and first.eta == again.eta
    assert first.stop_index == again.stop_index
    assert not torch.allclose(first.latent, other.latent)
    inference = [TruncatedDDIMSampler(num_steps=10).sample(RecordingDenoiser(ToyEpsNet()), z_T(),
                                                           generator=torch.Generator().manual_seed(s))
                 for s in (1, 1, 2)]
    assert torch.equal(inference[0].latent, inference[1].latent)
    assert not torch.allclose(inference[0].latent, inference[2].latent)


def test_training_eta_is_drawn_in_unit_interval_once_per_call():
    sampler = TruncatedDDIMSampler(num_steps=10)
    generator = torch.Generator().manual_seed(0)
    etas = [sampler.sample(RecordingDenoiser(ToyEpsNet()), z_T(), grad_steps=1, generator=generator).eta
            for _ in range(20)]
    assert all(0.0 <= eta < 1.0 for eta in etas) and len(set(etas)) == 20
    assert sampler.sample(RecordingDenoiser(ToyEpsNet()), z_T(), grad_steps=1, eta=0.3).eta == 0.3
    fixed = TruncatedDDIMSampler(num_steps=10, eta_train=0.0)
    assert fixed.draw_eta(torch.Generator().manual_seed(1)) == 0.0


def test_eta_per_update_redraws_eta_for_every_ddim_update():
    sampler = TruncatedDDIMSampler(num_steps=10, eta_per_update=True)
    once = TruncatedDDIMSampler(num_steps=10)
    per_update = sampler.sample(RecordingDenoiser(ToyEpsNet()), z_T(), grad_steps=1, stop_index=9,
                                generator=torch.Generator().manual_seed(4))
    per_call = once.sample(RecordingDenoiser(ToyEpsNet()), z_T(), grad_steps=1, stop_index=9,
                           generator=torch.Generator().manual_seed(4))
    assert 0.0 <= per_update.eta < 1.0 and per_update.eta != per_call.eta
    assert not torch.allclose(per_update.latent, per_call.latent)


def test_bf16_denoiser_output_is_updated_in_float32():
    denoiser = RecordingDenoiser(ToyEpsNet(), out_dtype=torch.bfloat16)
    sampler = TruncatedDDIMSampler(num_steps=10)
    inference = sampler.sample(denoiser, z_T(), eta=0.0)
    training = sampler.sample(denoiser, z_T(), grad_steps=2, eta=0.0)
    assert inference.latent.dtype == torch.float32 and training.latent.dtype == torch.float32
    assert all(call[0].dtype == torch.float32 for call in denoiser.calls)


@pytest.mark.parametrize('kwargs', [dict(stop_window=0), dict(stop_window=51), dict(eta_train='normal'),
                                    dict(eta_infer=-1.0), dict(num_steps=1000)])
def test_invalid_sampler_options_raise(kwargs):
    with pytest.raises(ValueError):
        TruncatedDDIMSampler(**kwargs)


def test_invalid_sample_arguments_raise():
    sampler = TruncatedDDIMSampler(num_steps=10)
    denoiser = RecordingDenoiser(ToyEpsNet())
    for kwargs in (dict(grad_steps=-1), dict(grad_steps=0, stop_index=9), dict(grad_steps=1, stop_index=10)):
        with pytest.raises(ValueError):
            sampler.sample(denoiser, z_T(), **kwargs)
    with pytest.raises(ValueError, match='shape'):
        sampler.sample(lambda z, t, g: z[:, :3], z_T())


def test_leading_timesteps_for_other_step_counts():
    assert leading_timesteps(4).tolist() == [751, 501, 251, 1]
    assert leading_timesteps(500)[0] == 999


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cpu_generator_drives_cuda_latents_deterministically():
    net = ToyEpsNet().cuda()
    sampler = TruncatedDDIMSampler(num_steps=10)
    outs = [sampler.sample(RecordingDenoiser(net), z_T().cuda(), grad_steps=1,
                           generator=torch.Generator().manual_seed(2)) for _ in range(2)]
    assert outs[0].latent.device.type == 'cuda'
    assert torch.equal(outs[0].latent, outs[1].latent)
