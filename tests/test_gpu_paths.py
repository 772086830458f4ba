"""The CUDA paths, checked on the CPU by simulating what CUDA would report: the backend and NCCL timeout a CUDA
run starts its group with, per-device random states that resume where fewer GPUs are visible, and the
``deterministic`` option's settings. (Validation on every rank's share: tests/test_distributed.py.)"""
import datetime

import pytest
import torch

from drward.models.training_state import capture_random_state, restore_random_state
from drward.utils import determinism, distributed
from drward.utils.atomic_io import atomic_save
from drward.utils.safe_load import load_training_state


class FakeCuda:
    """``torch.cuda`` as a process bound to GPU ``device`` of ``count`` visible ones reports it (per-device RNG)."""

    def __init__(self, monkeypatch, count: int, device: int):
        self.count, self.device, self.states = count, device, {d: torch.full((16,), d, dtype=torch.uint8)
                                                              for d in range(count)}
        for name, value in {'is_available': lambda: True, 'is_initialized': lambda: True,
                            'device_count': lambda: self.count, 'current_device': lambda: self.device,
                            'get_rng_state': self.get, 'set_rng_state': self.set, 'set_device': self.bind,
                            'get_rng_state_all': lambda: [self.states[d] for d in range(self.count)],
                            'set_rng_state_all': self.set_all}.items():
            monkeypatch.setattr(torch.cuda, name, value)

    def get(self, device='cuda'):
        return self.states[device if isinstance(device, int) else self.device].clone()

    def set(self, state, device='cuda'):
        device = device if isinstance(device, int) else self.device
        assert device < self.count, f'no GPU {device} among {self.count}'
        self.states[device] = state.clone()

    def set_all(self, states):
        for d, state in enumerate(states):
            self.set(state, d)  # torch raises IndexError past the visible GPUs

    def bind(self, device):
        self.device = device


def test_a_state_written_with_8_visible_gpus_resumes_where_one_is_visible(monkeypatch, tmp_path):
    gen = torch.Generator().manual_seed(0)
    FakeCuda(monkeypatch, count=8, device=5)  # rank 5 of a node with 8 GPUs
    streams = {5: capture_random_state({'sampling': gen})}
    assert torch.equal(streams[5]['cuda_device'], torch.full((16,), 5, dtype=torch.uint8))  # its own GPU only
    atomic_save({'iter': 3, 'random': streams}, tmp_path / 'rng.state')
    state = load_training_state(str(tmp_path / 'rng.state'))

    one = FakeCuda(monkeypatch, count=1, device=0)  # resumed under SLURM with one GPU per task
    restore_random_state(state['random'][5], {'sampling': gen})
    assert torch.equal(one.states[0], torch.full((16,), 5, dtype=torch.uint8))
    # a file from before (every visible GPU's state) resumes too: this process's device's entry
    older = dict(state['random'][5])
    older['cuda'] = [torch.full((16,), 10 + d, dtype=torch.uint8) for d in range(8)]
    del older['cuda_device']
    restore_random_state(older, {'sampling': gen})
    assert torch.equal(one.states[0], torch.full((16,), 10, dtype=torch.uint8))


def test_a_cuda_run_starts_nccl_on_its_local_gpu_with_an_hour_of_collective_timeout(monkeypatch):
    FakeCuda(monkeypatch, count=8, device=0)
    calls = []
    monkeypatch.setattr(distributed.dist, 'init_process_group', lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(torch.multiprocessing, 'get_start_method', lambda allow_none=False: 'spawn')
    monkeypatch.setenv('LOCAL_RANK', '3')
    monkeypatch.setitem(distributed._SETTINGS, 'dist_params', {})
    distributed.configure({'num_gpu': 'auto'})
    assert distributed._SETTINGS['device'] == 'cuda'
    distributed.init_dist('pytorch')
    assert calls[-1] == {'backend': 'nccl', 'timeout': datetime.timedelta(minutes=60)}
    assert torch.cuda.current_device() == 3
    distributed.configure({'num_gpu': 'auto', 'dist_params': {'timeout_minutes': 120}})  # the option file wins
    distributed.init_dist('pytorch')
    assert calls[-1]['timeout'] == datetime.timedelta(minutes=120)
    distributed.configure({'num_gpu': 0})  # gloo keeps its own default (30 min)
    distributed.init_dist('pytorch')
    assert calls[-1] == {'backend': 'gloo', 'timeout': None}


@pytest.fixture
def restored_backend_flags():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.use_deterministic_algorithms(saved[0])
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved[1:]


def test_deterministic_option_turns_off_cudnn_benchmark_tf32_and_nondeterministic_kernels(monkeypatch,
                                                                                          restored_backend_flags):
    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
    torch.backends.cudnn.benchmark = True  # what BasicSR's train pipeline sets
    torch.backends.cudnn.allow_tf32 = True
    assert determinism.apply({}) == {} and torch.backends.cudnn.benchmark  # off by default: nothing changes
    determinism.apply({'deterministic': True})
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    import os
    assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    with pytest.raises(ValueError, match='option deterministic: true or false'):
        determinism.apply({'deterministic': 'yes'})
