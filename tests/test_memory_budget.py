"""The memory budget (benchmarks/memory_budget.py) at tiny size: its rows are the built modules' own bytes, its
total is weights + AdamW states + the larger phase, and the activations it measures are real saved tensors."""
import os
import sys

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.heavy  # whole training runs: scheduled first (tests/conftest.py)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import memory_budget  # noqa: E402
from benchmarks.lib import bench_models  # noqa: E402
from tests.test_benchmarks import table_starting_with  # noqa: E402

MIB = 2 ** 20


def column(rows, label_start, index):
    return [float(row[index].replace(',', '')) for row in rows if row[0].startswith(label_start)]


def test_tiny_budget_rows_are_the_models_bytes_and_add_up_to_the_total():
    argv = ['--size', 'tiny', '--restorer', 'diffbir', '--steps', '2']
    report = memory_budget.main(argv)
    header, rows = table_starting_with(report, 'component')
    assert header[2:] == ['no checkpointing MiB', 'checkpointing MiB']
    by_label = {row[0]: row for row in rows}

    args = memory_budget.parse_args(argv)
    net, frm, losses = bench_models.build_on_meta(args, bench_models.SPECS['diffbir'])
    everything = [t for m in (net, frm, *losses) for t in (*m.parameters(), *m.buffers())]
    trained_g = sum(p.numel() * p.element_size() for p in net.trainable_parameters())
    trained_frm = sum(p.numel() * p.element_size() for p in frm.trainable_parameters())
    # rounding: every cell is printed to 0.01 MiB
    built = sum(t.numel() * t.element_size() for t in everything)
    assert sum(column(rows, 'weights: ', 2)) * MIB == pytest.approx(built, abs=0.005 * MIB * len(rows))
    assert float(by_label['gradients: generator'][2]) * MIB == pytest.approx(trained_g, abs=0.005 * MIB)
    assert float(by_label['AdamW states: FRM'][2]) * MIB == pytest.approx(2 * trained_frm, abs=0.005 * MIB)

    for col in (2, 3):
        weights = sum(column(rows, 'weights: ', col))
        states = sum(column(rows, 'AdamW states: ', col))
        phase1 = float(by_label['gradients: generator'][col]) + column(rows, 'saved activations: generator', col)[0]
        phase2 = float(by_label['gradients: FRM'][col]) + column(rows, 'saved activations: FRM', col)[0]
        total = float(by_label['**total = predicted peak**'][col])
        assert abs(weights + states + max(phase1, phase2) - total) < 0.01 * len(rows)
    graph = column(rows, 'saved activations: generator', 2) + column(rows, 'saved activations: generator', 3)
    assert graph[0] > graph[1] > 0  # checkpointing keeps less (exact byte counts, not timings)


def test_compute_copies_held_as_attributes_are_counted_once_by_dtype():
    class WithCopy(nn.Module):
        def __init__(self):
            super().__init__()
            self.trained = nn.Linear(4, 4)                       # 20 fp32 values, requires_grad
            self.frozen = nn.Linear(4, 4).requires_grad_(False)  # 20 fp32 values
            self.copy = self.trained.weight.detach().to(torch.bfloat16)  # a bf16 compute copy: 16 values
            self.held = [self.copy]                               # the same tensor again: counted once

    (component,) = memory_budget.count_components([('m', WithCopy())])
    assert component.trained == {'float32': 20 * 4}
    assert component.frozen == {'float32': 20 * 4, 'bfloat16': 16 * 2}


def test_casts_of_trained_weights_count_in_phase_one_only():
    # the compute copy and the FRM's cast cache are released after each optimiser step (before the FRM update)
    G = 2 ** 30
    components = [memory_budget.Component('sd.unet', frozen={'bfloat16': 2 * G}),
                  memory_budget.Component('controlnet', trained={'float32': 4 * G}),
                  memory_budget.Component(memory_budget.HELD_OUTSIDE, frozen={'bfloat16': 2 * G}),
                  memory_budget.Component('FRM', trained={'float32': 1 * G})]
    acts = {False: memory_budget.Activations(generator=3 * G, frm_update=1 * G)}
    budget = memory_budget.Budget(components, 4 * G, 1 * G, acts, casts_in_components=2 * G, frm_casts_to_come=G // 2)
    # weights without casts 7 + states 2·(4 + 1) = 10 + max(casts 2.5 + graph 3 + grads 4, FRM graph 1 + grads 1)
    assert budget.total(False) == 7 * G + 10 * G + int(9.5 * G)
    budget.activations = {False: memory_budget.Activations(generator=0, frm_update=20 * G)}
    assert budget.total(False) == 7 * G + 10 * G + 21 * G  # phase 2 the larger: no casts in it


def test_world_size_rows_hold_one_gpus_share_of_the_adamw_states():
    from drward.models.frm_optim import frm_param_groups
    from drward.models.parallel import zero_shard_bytes
    argv = ['--size', 'tiny', '--restorer', 'diffbir', '--skip-activations', '--world-size', '2']
    _, rows = table_starting_with(memory_budget.main(argv), 'component')
    by_label = {row[0]: row for row in rows}
    net, frm, _ = bench_models.build_on_meta(memory_budget.parse_args(argv), bench_models.SPECS['diffbir'])
    share_g = max(zero_shard_bytes([list(net.trainable_parameters())], 2))
    share_frm = max(zero_shard_bytes([g['params'] for g in frm_param_groups(frm, 0.0)], 2))
    trained_g = sum(p.numel() * p.element_size() for p in net.trainable_parameters())
    trained_frm = sum(p.numel() * p.element_size() for p in frm.trainable_parameters())
    assert trained_g / 2 <= share_g < trained_g and trained_frm / 2 <= share_frm < trained_frm
    assert float(by_label['AdamW states: generator'][2]) * MIB == pytest.approx(2 * share_g, abs=0.005 * MIB)
    assert float(by_label['AdamW states: FRM'][2]) * MIB == pytest.approx(2 * share_frm, abs=0.005 * MIB)
    saved = float(by_label['(sharding saves per GPU, not added)'][2]) * MIB
    assert saved == pytest.approx(2 * (trained_g + trained_frm - share_g - share_frm), abs=0.01 * MIB)
    # per GPU: weights + sharded states + DDP's generator gradients + the FRM update's gradients (the larger phase
    # without activations)
    weights = sum(column(rows, 'weights: ', 2))
    expected = weights + (2 * (share_g + share_frm) + trained_g + max(0, trained_frm)) / MIB
    total = float(by_label['**total per GPU (2 GPUs) without activations (lower bound)**'][2])
    assert total == pytest.approx(expected, abs=0.01 * len(rows))


def test_measured_budget_counts_the_compute_copy_that_the_generator_step_released():
    """The weights of the measured budget are counted after its steps, when the IRControlNet's bf16 compute copy has
    been released (stale after the optimiser step); phase 1 holds it again at the next restore, so both budgets,
    counted on the meta device and measured, show the same cast rows."""
    base = ['--size', 'tiny', '--restorer', 'diffbir', '--weight-dtype', 'bf16', '--steps', '2']
    rows = {}
    for extra in ([], ['--skip-activations']):
        _, table = table_starting_with(memory_budget.main(base + extra), 'component')
        rows[bool(extra)] = {row[0]: float(row[2].replace(',', '')) for row in table if row[0].startswith('weights')}
    copy = f'weights: {memory_budget.HELD_OUTSIDE}'
    assert rows[True][copy] > 0
    assert rows[False][copy] == pytest.approx(rows[True][copy], abs=0.015)  # cells printed to 0.01


def test_cuda_measure_runs_the_checkpointed_step_first_and_reports_an_oom_variant(monkeypatch):
    """--device cuda, simulated on the CPU: the checkpointed variant runs first, an OOM in the other one becomes an
    'OOM' cell (not a crash), and the prediction with checkpointing is still given."""
    order = []
    real_run_step, real_set = memory_budget.run_step, memory_budget.set_checkpointing

    def set_checkpointing(model, restorer, frm):
        order.append(restorer)
        real_set(model, restorer, frm)

    def run_step(model, batch, clock, n, seed):
        if not order[-1]:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB (simulated)')
        return real_run_step(model, batch, clock, n, seed)
    monkeypatch.setattr(memory_budget, 'set_checkpointing', set_checkpointing)
    monkeypatch.setattr(memory_budget, 'run_step', run_step)
    report = memory_budget.main(['--size', 'tiny', '--restorer', 'diffbir', '--steps', '2', '--threads', '1'])
    assert order == [True, False]
    total = next(line for line in report.splitlines() if line.startswith('| **total = predicted peak**'))
    assert total.split('|')[3].strip() == 'OOM' and total.split('|')[4].strip() != 'OOM'
    assert '**total, FRM AdamW states offloaded' in report


def test_lora_rows_count_the_factors_only_and_drop_the_theta0_copy():
    """--lora-ranks (benchmarks/lib/budget_lora.py), counted at tiny size: per row the gradients and AdamW states are
    the adapters' own bytes, the weights lose the full θ₀ copy of the IRControlNet, and the table has one row per
    rank."""
    from benchmarks.lib.budget_lora import lora_budgets
    args = memory_budget.parse_args(['--size', 'tiny', '--skip-activations', '--lora-ranks', '2', '8'])
    budgets = lora_budgets(args, bench_models.SPECS['diffbir'], args.lora_ranks)
    assert [label for label, _, _ in budgets] == ['full IRControlNet (paper)', 'LoRA rank 2', 'LoRA rank 8']
    full = budgets[0][2]
    for _, rank, budget in budgets[1:]:
        args.lora_rank = rank
        net, _, _ = bench_models.build_on_meta(args, bench_models.SPECS['diffbir'])
        factors = sum(p.numel() * p.element_size() for p in net.trainable_parameters())
        assert budget.generator_trained == factors < full.generator_trained
        assert net.controlnet_ref is None and budget.total(False) < full.total(False)
    report = memory_budget.main(['--size', 'tiny', '--skip-activations', '--lora-ranks', '2', '8'])
    header, rows = table_starting_with(report, 'generator')
    assert [row[0] for row in rows] == ['full IRControlNet (paper)', 'LoRA rank 2', 'LoRA rank 8']
