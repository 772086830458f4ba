"""The wavelet colour fix: low frequencies from the reference, high frequencies from the image."""
import pytest
import torch

from drward.diffusion import dilated_binomial_blur, wavelet_color_fix, wavelet_low_pass

SIZE = 64


def checkerboard(size: int = SIZE) -> torch.Tensor:
    """A ±0.2 one-pixel checkerboard (pure high frequency), (1, 3, size, size)."""
    rows = torch.arange(size).view(-1, 1)
    cols = torch.arange(size).view(1, -1)
    board = ((rows + cols) % 2).float() * 0.4 - 0.2
    return board.expand(1, 3, size, size).clone()


def pixel_detail(image: torch.Tensor) -> torch.Tensor:
    return image - dilated_binomial_blur(image, 1)


def constant_colour(rgb, size: int = SIZE) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def test_constant_reference_sets_the_mean_colour_and_keeps_the_detail():
    image = checkerboard() + constant_colour([0.2, 0.5, 0.8])
    reference = constant_colour([0.9, 0.1, 0.4])
    fixed = wavelet_color_fix(image, reference)
    torch.testing.assert_close(fixed.mean(dim=(2, 3)), torch.tensor([[0.9, 0.1, 0.4]]), atol=2e-3, rtol=0)
    detail = fixed - fixed.mean(dim=(2, 3), keepdim=True)
    inner = (..., slice(4, -4), slice(4, -4))  # replicate padding breaks the checkerboard at the very border
    torch.testing.assert_close(detail[inner], checkerboard()[inner], atol=5e-3, rtol=0)


def test_low_frequencies_of_the_output_follow_the_reference():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, SIZE, SIZE, generator=generator)
    ramp = torch.linspace(0, 1, SIZE).view(1, 1, 1, -1).expand(2, 3, SIZE, SIZE)
    reference = ramp * torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)  # a smooth colour gradient
    fixed = wavelet_color_fix(image, reference)
    low_error = (wavelet_low_pass(fixed) - wavelet_low_pass(reference)).abs().mean()
    before = (wavelet_low_pass(image) - wavelet_low_pass(reference)).abs().mean()
    assert low_error < 0.1 * before
    # pixel-scale detail (first level: x − B_1(x)) is the image's, not the reference's
    torch.testing.assert_close(pixel_detail(fixed), pixel_detail(image), atol=0.01, rtol=0)


def test_reference_equal_to_image_is_the_identity():
    image = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.testing.assert_close(wavelet_color_fix(image, image.clone()), image)


def test_smaller_reference_is_resized_to_the_image():
    image = checkerboard() + 0.5
    reference = constant_colour([0.1, 0.2, 0.3], size=SIZE // 2)
    fixed = wavelet_color_fix(image, reference)
    assert fixed.shape == image.shape
    torch.testing.assert_close(fixed.mean(dim=(2, 3)), torch.tensor([[0.1, 0.2, 0.3]]), atol=2e-3, rtol=0)


def test_mismatched_batch_or_channels_raise():
    with pytest.raises(ValueError):
        wavelet_color_fix(torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError):
        wavelet_low_pass(torch.rand(1, 3, 8, 8), levels=0)
