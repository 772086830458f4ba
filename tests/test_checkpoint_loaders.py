"""The official-checkpoint loaders: drward.weights registers them, the restorers (archs) find them by name."""
import pytest

import drward  # noqa: F401  (imports drward.weights, which registers the loaders)
from drward.archs import checkpoint_loaders
from drward.weights import diffbir, osediff, sd


def test_importing_drward_registers_every_loader_the_restorers_use():
    assert checkpoint_loaders.loader('sd') is sd.load_sd_weights
    assert checkpoint_loaders.loader('diffbir_controlnet') is diffbir.load_diffbir_controlnet
    assert checkpoint_loaders.loader('face_swinir') is diffbir.load_face_swinir
    assert checkpoint_loaders.loader('osediff_lora_file') is osediff.read_lora_file
    assert checkpoint_loaders.loader('osediff_lora') is osediff.load_osediff_lora


def test_a_missing_loader_is_one_clear_error_naming_what_is_registered():
    with pytest.raises(LookupError, match=r"no checkpoint loader 'no_such' is registered \(registered: \[.*'sd'"):
        checkpoint_loaders.loader('no_such')


def test_a_second_function_cannot_take_a_registered_name():
    def impostor(parts, path):
        raise AssertionError('never called')

    with pytest.raises(ValueError, match="checkpoint loader 'sd' is already drward.weights.sd.load_sd_weights"):
        checkpoint_loaders.checkpoint_loader('sd')(impostor)
    assert checkpoint_loaders.loader('sd') is sd.load_sd_weights
