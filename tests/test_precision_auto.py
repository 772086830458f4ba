"""``weight_dtype: auto`` / ``mixed_precision: auto`` / ``--weight-dtype auto``: bf16 only where the device runs it
natively. Every device kind is simulated by replacing what the detection reads (``/proc/cpuinfo`` flags, the CUDA
compute capability, the one-time matmul measurement)."""
import logging

import pytest
import torch

from drward.archs.diffbir_arch import DiffBIRRestorer
from drward.archs.precision import parse_weight_dtype
from drward.inference.model import build_face_restorer
from drward.utils import precision_check as pc

CPU_KINDS = {  # /proc/cpuinfo flags of the three CPU kinds of docs/speed.md (None: no /proc/cpuinfo)
    'xeon_amx': {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile'},
    'epyc_avx512_bf16': {'avx2', 'avx512f', 'avx512_bf16'},
    'epyc_avx2_only': {'avx2', 'fma'},
}


@pytest.fixture
def cpu_kind(monkeypatch):
    """Call with a kind of :data:`CPU_KINDS` (or flags=None plus a measured ratio) to simulate that CPU."""
    def simulate(kind=None, ratio=None):
        flags = CPU_KINDS[kind] if kind else None
        monkeypatch.setattr(pc, 'cpu_flags', lambda path='/proc/cpuinfo': flags)
        monkeypatch.setattr(pc, 'cpu_model_name', lambda path='/proc/cpuinfo': f'Simulated {kind or "CPU"}')
        monkeypatch.setattr(pc, 'measured_bf16_ratio', lambda size=256, repeats=3: ratio)
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
        pc.cpu_bf16_support.cache_clear()
    yield simulate
    pc.cpu_bf16_support.cache_clear()


@pytest.fixture
def cuda_card(monkeypatch):
    def simulate(capability, name):
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, 'get_device_name', lambda index=None: name)
        monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    return simulate


@pytest.mark.parametrize('kind,expected', [('xeon_amx', 'bf16'), ('epyc_avx512_bf16', 'bf16'),
                                           ('epyc_avx2_only', 'fp32')])
def test_auto_on_each_cpu_kind(cpu_kind, kind, expected):
    cpu_kind(kind)
    choice = pc.choose_precision('auto', torch.device('cpu'))
    assert choice.name == expected and choice.dtype == (torch.bfloat16 if expected == 'bf16' else torch.float32)
    assert f'Simulated {kind}' in choice.reason and ('native' in choice.reason) == (expected == 'bf16')


@pytest.mark.parametrize('ratio,expected', [(1.2, 'bf16'), (24.0, 'fp32')])
def test_without_proc_cpuinfo_one_measurement_decides(cpu_kind, ratio, expected):
    cpu_kind(None, ratio=ratio)
    choice = pc.choose_precision('auto', torch.device('cpu'))
    assert choice.name == expected and f'{ratio:.1f}x the fp32 time' in choice.reason


def test_the_measurement_runs_once_per_process(cpu_kind, monkeypatch):
    cpu_kind(None)
    calls = []
    monkeypatch.setattr(pc, 'measured_bf16_ratio', lambda size=256, repeats=3: calls.append(1) or 1.0)
    for _ in range(3):
        pc.choose_precision('auto', torch.device('cpu'))
    assert len(calls) == 1


def test_the_real_measurement_gives_a_positive_ratio():
    assert pc.measured_bf16_ratio(size=32, repeats=1) > 0


@pytest.mark.parametrize('capability,name,expected', [((8, 0), 'NVIDIA A100', 'bf16'), ((9, 0), 'NVIDIA H100', 'bf16'),
                                                      ((7, 5), 'Tesla T4', 'fp32'), ((7, 0), 'Tesla V100', 'fp32')])
def test_auto_on_each_cuda_generation(cuda_card, capability, name, expected):
    cuda_card(capability, name)
    choice = pc.choose_precision('auto', torch.device('cuda:0'))
    assert choice.name == expected and f'{name} (compute capability {capability[0]}.{capability[1]})' in choice.reason


def test_other_device_kinds_and_explicit_values(cpu_kind):
    cpu_kind('xeon_amx')
    assert pc.choose_precision('auto', torch.device('mps')).name == 'fp32'
    assert pc.choose_precision('bf16', torch.device('mps')).name == 'bf16'  # explicit values are kept as set
    assert pc.choose_precision('fp32', torch.device('cpu')).name == 'fp32'
    assert pc.choose_precision('no', torch.device('cpu')).name == 'fp32'
    with pytest.raises(ValueError, match="'auto', 'bf16' or 'fp32'"):
        pc.choose_precision('fp16', torch.device('cpu'))


@pytest.mark.parametrize('kind,expected', [('xeon_amx', torch.bfloat16), ('epyc_avx2_only', None)])
def test_mixed_precision_auto(cpu_kind, kind, expected):
    cpu_kind(kind)
    assert pc.mixed_precision_dtype('auto', torch.device('cpu'), 'ReFLModel') is expected
    assert pc.mixed_precision_dtype('bf16', torch.device('cpu'), 'ReFLModel') is torch.bfloat16
    assert pc.mixed_precision_dtype(None, torch.device('cpu'), 'ReFLModel') is None
    with pytest.raises(ValueError, match=r"\['auto', 'bf16', 'no'\], got 'fp16'"):
        pc.mixed_precision_dtype('fp16', torch.device('cpu'), 'ReFLModel')


def test_the_emulated_kinds_get_advice(cpu_kind, cuda_card):
    cpu_kind('epyc_avx2_only')
    assert 'would be emulated' in pc.bf16_advice(torch.device('cpu'))
    cpu_kind('xeon_amx')
    assert pc.bf16_advice(torch.device('cpu')) is None


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.parametrize('kind,expected', [('xeon_amx', torch.bfloat16), ('epyc_avx2_only', torch.float32)])
def test_a_restorer_with_auto_stores_its_frozen_weights_as_chosen_and_says_so_once(cpu_kind, kind, expected):
    cpu_kind(kind)
    handler = _Lines()
    logger = logging.getLogger('basicsr')
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        net = DiffBIRRestorer(tiny=True, num_steps=2, weight_dtype='auto')
        assert parse_weight_dtype('auto', 'DiffBIRRestorer') == expected  # the same choice again: no second line
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert net.weight_dtype == expected
    frozen = [p for p in net.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == expected for p in frozen)
    assert all(p.dtype == torch.float32 for p in net.trainable_parameters())  # trained weights stay fp32 masters
    ours = [line for line in handler.lines if line.startswith('DiffBIRRestorer: precision')]
    name = 'bf16' if expected == torch.bfloat16 else 'fp32'
    assert len(ours) == 1 and ours[0].startswith(f'DiffBIRRestorer: precision {name} (auto on cpu: Simulated {kind}')


def test_the_command_line_default_is_auto_and_the_description_says_why(cpu_kind):
    cpu_kind('epyc_avx2_only')
    model = build_face_restorer(tiny=True, restorer='diffbir', steps=2, device='cpu')  # weight_dtype defaults to auto
    assert model.net.weight_dtype == torch.float32
    assert 'fp32 weights (auto on cpu: Simulated epyc_avx2_only' in model.description
    cpu_kind('xeon_amx')
    model = build_face_restorer(tiny=True, restorer='osediff', device='cpu')
    assert model.net.weight_dtype == torch.bfloat16 and 'bf16 weights (auto on cpu' in model.description
