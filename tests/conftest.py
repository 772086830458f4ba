"""Shared pytest set-up: offline, deterministic, CPU."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import pytest  # noqa: E402
import torch  # noqa: E402

import drward  # noqa: E402,F401  (registers everything once)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
