"""Optimiser states kept in host memory between uses (``train.frm_update.offload``, docs/speed.md).

The dynamic FRM update runs once every n = 10 generator steps, yet its AdamW states (``exp_avg``, ``exp_avg_sq``:
2 × the FRM's unlocked weights, 3.84 GiB for ViT-H-14's fp32 trained half) would sit in GPU memory through every
generator step. Offloaded, they live in host memory (pinned on a CUDA run, so the copies run at full PCIe speed) and
come back to the parameters' device for the update only; the FRM's gradients already exist only during the update
(``zero_grad(set_to_none=True)``). During the update the generator's AdamW states are idle: they go to host memory
for its duration (2.71 GiB for DiffBIR's IRControlNet), so neither phase holds both optimisers' states. Copies are
exact, so a run with offloading computes the same updates as one without, bit for bit.

On the CPU the round trip still copies (host → "device" → host are distinct tensors), so the tests exercise it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch

HOST = torch.device('cpu')


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimiser holding the states (a ``ZeroRedundancyOptimizer`` holds its shard in ``.optim``)."""
    return getattr(optimizer, 'optim', optimizer)


def _copy(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An exact copy on ``device``; host copies of CUDA tensors pinned, and host → CUDA copies non-blocking."""
    if device.type == 'cpu':
        host = torch.empty_like(tensor, device=HOST, pin_memory=tensor.is_cuda)
        return host.copy_(tensor, non_blocking=False)
    return tensor.to(device, non_blocking=True, copy=True)


class StateOffload:
    """Moves an optimiser's state tensors to host memory and back (``step`` counters included: they are tiny).

    Args:
        optimizer: the optimiser (AdamW, or ZeRO-sharded: its local shard).
        enabled: false = a no-op (the states stay where the optimiser made them).
        resident_on_host: true = the states' home is host memory (:meth:`on_device` for a step; a loaded
            training state goes straight back to the host); false = their home is the device and
            :meth:`swapped_out` lends their memory to something else for a block.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, enabled: bool, resident_on_host: bool = True):
        self.optimizer = optimizer
        self.enabled = bool(enabled)
        self.offloaded = False
        self._devices: Dict[tuple, torch.device] = {}  # where each state tensor lived before it was offloaded
        if self.enabled and resident_on_host:  # a resumed training state loads onto the parameters' device
            _inner(optimizer).register_load_state_dict_post_hook(lambda _opt: self._after_load())

    def _after_load(self) -> None:
        self.offloaded = False
        self.to_host()

    def _move(self, to_host: bool) -> None:
        inner = _inner(self.optimizer)
        for param, state in inner.state.items():
            for key, value in state.items():
                if not torch.is_tensor(value):
                    continue
                if to_host:
                    self._devices[(id(param), key)] = value.device
                    state[key] = _copy(value, HOST)
                else:
                    state[key] = _copy(value, self._devices.pop((id(param), key), param.device))

    def to_host(self) -> None:
        """States → host memory (nothing when disabled or already there)."""
        if self.enabled and not self.offloaded:
            self._move(to_host=True)
            self.offloaded = True

    def to_device(self) -> None:
        """States → their parameters' device, for a step."""
        if self.enabled and self.offloaded:
            self._move(to_host=False)
            self.offloaded = False

    @contextmanager
    def on_device(self) -> Iterator[None]:
        """The states on the device inside the block (the update), in host memory after it."""
        self.to_device()
        try:
            yield
        finally:
            self.to_host()

    @contextmanager
    def swapped_out(self) -> Iterator[None]:
        """The states in host memory inside the block, back on the device after it."""
        self.to_host()
        try:
            yield
        finally:
            self.to_device()

    def host_bytes(self) -> int:
        """Bytes of state now in host memory (0 when not offloaded)."""
        if not self.offloaded:
            return 0
        return sum(v.numel() * v.element_size() for s in _inner(self.optimizer).state.values()
                   for v in s.values() if torch.is_tensor(v))


def state_devices(optimizer: torch.optim.Optimizer) -> Dict[str, int]:
    """How many state tensors live on each device type (for tests and logs)."""
    counts: Dict[str, int] = {}
    for state in _inner(optimizer).state.values():
        for value in state.values():
            if torch.is_tensor(value):
                counts[value.device.type] = counts.get(value.device.type, 0) + 1
    return counts
