"""The ReFL step benchmark (benchmarks/refl_step.py): the report has every part and the ratio columns, the clock and
the saved-tensor meter measure what they say, the instrumentation attributes the step's work to the right parts and
leaves no trace. Tiny models, one measured step per variant, no timing assertions."""
import os
import sys

import pytest
import torch
from torch import nn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import refl_step  # noqa: E402
from benchmarks.lib import bench_models, common, step_parts  # noqa: E402

ORIGINAL_BACKWARD = torch.autograd.backward
K = 3
SMALLEST = ['--steps', str(K), '--repeats', '1', '--warmup', '0', '--resolution', '64']


def tables(report: str):
    """Every Markdown table of the report as (header cells, rows of cells)."""
    found, lines = [], report.splitlines()
    for i, line in enumerate(lines):
        if line.startswith('| ') and i + 1 < len(lines) and lines[i + 1].startswith('| :---'):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith('| '):
                    break
                rows.append([cell.strip() for cell in row.strip('|').split(' | ')])
            found.append(([cell.strip() for cell in line.strip('|').split(' | ')], rows))
    return found


def table_starting_with(report: str, first_header: str):
    return next(t for t in tables(report) if t[0][0] == first_header)


@pytest.fixture(scope='module')
def measured():
    """One tiny DiffBIR run with variants N = 1, 2 and K (the full chain)."""
    args = refl_step.parse_args(SMALLEST + ['--also-n', '2'])
    torch.set_num_threads(args.threads)
    return refl_step.run_benchmark(args, refl_step.SPECS['diffbir'])


# ------------------------------------------------------------------------------------------------ the report
def test_smallest_config_table_has_every_part_and_a_ratio_column(tmp_path):
    out = tmp_path / 'table.md'
    report = refl_step.main(SMALLEST + ['--out', str(out)])
    assert out.read_text() == report
    header, rows = table_starting_with(report, 'part')
    assert header[-1] == 'time N = 1 / full' and f'N = {K} ms' in header
    expected = [label for key, label in refl_step.PARTS if key != 'bwd_conditioning']  # DiffBIR: frozen stage 1
    assert [row[0] for row in rows] == expected + ['**total** (sum of part medians)']
    for row in rows:
        assert len(row) == len(header)
        if row[0] != refl_step.PART_LABELS['prefix']:  # the full chain has no no-grad prefix
            assert float(row[-1]) > 0
    v_header, v_rows = table_starting_with(report, 'variant')
    assert 'time / full chain' in v_header and 'saved / full chain' in v_header
    by_name = {row[0]: dict(zip(v_header, row)) for row in v_rows}
    assert by_name['N = 1 (ReFL, paper)']['grad calls'] == '1'
    full = by_name[f'N = K = {K} (full chain)']
    assert full['grad calls'] == str(K) and full['time / full chain'] == '1.000'


def test_one_step_restorer_reports_itself_as_the_full_chain():
    if not refl_step.available(refl_step.SPECS['osediff']):
        pytest.skip('OSEDiffRestorer is not in this checkout')
    report = refl_step.main(SMALLEST + ['--restorer', 'osediff'])
    _, rows = table_starting_with(report, 'part')
    labels = [row[0] for row in rows]
    assert refl_step.PART_LABELS['bwd_conditioning'] in labels  # its VAE encoder carries LoRA: gradient flows
    assert refl_step.PART_LABELS['prefix'] not in labels
    _, v_rows = table_starting_with(report, 'variant')
    assert [row[0] for row in v_rows] == ['N = K = 1 (one step: the full chain)']


def test_missing_restorer_is_skipped_with_a_note(monkeypatch):
    missing = refl_step.RestorerSpec('NoSuchRestorer', 'Nothing', lambda steps: {})
    monkeypatch.setitem(refl_step.SPECS, 'osediff', missing)
    report = refl_step.main(['--restorer', 'osediff'])
    assert 'NoSuchRestorer' in report and 'skipped' in report


def size_table(report: str):
    """The construct-only table as ``{module: {column: float}}``."""
    header, rows = table_starting_with(report, 'module')
    return {row[0]: {col: float(cell.replace(',', '')) for col, cell in zip(header[1:], row[1:])} for row in rows}


def test_sd21_sizes_build_on_the_meta_device_without_running():
    report = refl_step.main(['--size', 'sd21', '--construct-only'])
    assert "['meta']" in report and 'K = 50' in report
    sizes = size_table(report)
    controlnet = sizes['restorer.controlnet']
    assert controlnet['trained (M)'] == controlnet['parameters (M)'] > 300
    assert sizes['restorer.sd']['trained (M)'] == 0
    assert sizes['**total**']['parameters (M)'] > 2500  # SD 2.1 + IRControlNet (+ θ₀ copy) + ViT-H-14 FRM


def test_osediff_sd21_sizes_build_on_the_meta_device():
    if not refl_step.available(refl_step.SPECS['osediff']):
        pytest.skip('OSEDiffRestorer is not in this checkout')
    sizes = size_table(refl_step.main(['--restorer', 'osediff', '--size', 'sd21', '--construct-only']))
    assert sizes['restorer.sd']['parameters (M)'] > 1200  # SD 2.1-base UNet + VAE + text tower, with LoRA
    assert 0 < sizes['restorer.sd']['trained (M)'] < 50  # rank-4 LoRA (+ conv_in)


def test_sd21_size_is_the_restorers_random_weights_option_logged_as_random(caplog):
    """No patching: --size sd21 asks the restorer for real sizes without files, and the restorer says RANDOM."""
    args = refl_step.parse_args(['--size', 'sd21', '--steps', '50'])
    options = bench_models.restorer_options(refl_step.SPECS['diffbir'], args)
    assert options['random_weights'] is True and 'tiny' not in options
    from accelerate import init_empty_weights
    from basicsr.archs import build_network
    with init_empty_weights(), caplog.at_level('WARNING'):
        net = build_network(options)
    assert net.sd.config.name == 'sd2.1-base' and not net.is_tiny
    assert 'RANDOM weights at real size' in caplog.text


# ------------------------------------------------------------------------------------------------ what is measured
def test_no_grad_prefix_saves_nothing_for_backward_and_the_grad_step_does(measured):
    parts = measured.results[1].parts
    assert parts['prefix'].seconds > 0 and parts['prefix'].saved_bytes == 0
    assert parts['grad_steps'].saved_bytes > 0 and parts['decode'].saved_bytes > 0


def test_full_chain_has_no_prefix_and_keeps_the_graph_of_every_call(measured):
    results = measured.results
    assert list(results) == [1, 2, K]
    assert [results[n].grad_calls for n in results] == [1, 2, K]
    assert 'prefix' not in results[K].parts
    saved = [results[n].parts['grad_steps'].saved_bytes for n in results]
    assert saved[0] < saved[1] < saved[2]


def test_parts_sum_to_the_step_wall_time(measured):
    result = measured.results[1]
    for parts, total in zip(result.runs, result.totals):
        assert sum(m.seconds for m in parts.values()) == pytest.approx(total, rel=1e-9, abs=1e-12)


def test_instrumentation_leaves_no_trace(measured):
    model = measured.model
    assert 'restore' not in vars(model.net_g) and 'sample' not in vars(model.net_g.sampler)
    assert 'update_frm' not in vars(model)
    assert torch.autograd.backward is ORIGINAL_BACKWARD
    for criterion in model.criteria.values():
        if criterion is not None:
            assert not criterion._forward_hooks and not criterion._forward_pre_hooks
    assert not model.optimizer_g._optimizer_step_pre_hooks and not model.optimizer_g._optimizer_step_post_hooks


def test_out_of_memory_variant_is_reported_and_the_others_still_run(measured, monkeypatch):
    real_run_step = step_parts.run_step

    def run_step(model, batch, clock, grad_steps, seed):
        if grad_steps == K:
            raise torch.OutOfMemoryError('CUDA out of memory (simulated)')
        return real_run_step(model, batch, clock, grad_steps, seed)
    monkeypatch.setattr(step_parts, 'run_step', run_step)
    args = refl_step.parse_args(SMALLEST)
    clock = common.PartClock(common.RssMemoryProbe())
    try:
        results = refl_step.measure(measured.model, refl_step.make_batch(args, torch.device('cpu')), clock, [1, K],
                                    repeats=1, warmup=0, seed=0)
    finally:
        clock.probe.close()
    assert results[K].failure == 'out of memory' and not results[K].runs
    assert len(results[1].runs) == 1
    report = refl_step.render_report(args, refl_step.SPECS['diffbir'], measured.model, K, results, 'test')
    header, rows = table_starting_with(report, 'variant')
    full = dict(zip(header, rows[-1]))
    assert full['step ms'] == 'out of memory'
    assert all(row[-1] == 'n/a' for row in table_starting_with(report, 'part')[1])


def test_thread_clock_needs_one_cpu_thread():
    with pytest.raises(SystemExit):
        refl_step.parse_args(['--clock', 'thread', '--threads', '2'])
    assert refl_step.parse_args(['--clock', 'thread']).clock == 'thread'


# ------------------------------------------------------------------------------------------------ the tools
class FakeProbe:
    """Memory levels scripted per call of take_peak."""

    description = 'fake'

    def __init__(self, level, peaks):
        self._level, self._peaks = level, iter(peaks)

    def synchronize(self):
        pass

    def level(self):
        return self._level

    def take_peak(self):
        return next(self._peaks)


def test_part_clock_adds_recurring_parts_and_keeps_peaks_above_the_start(monkeypatch):
    ticks = iter([10.0, 11.0, 13.0, 14.5, 20.0])
    monkeypatch.setattr(common.time, 'perf_counter', lambda: next(ticks))
    clock = common.PartClock(FakeProbe(level=100, peaks=[100, 150, 400, 120, 90]))
    clock.start('a')        # t = 10
    clock.switch('b')       # a: 1 s, peak 150
    clock.switch('a')       # b: 2 s, peak 400
    clock.switch('b')       # a: 1.5 s more, peak 120
    clock.stop()            # b: 5.5 s more, peak 90 (below the start: 0)
    assert clock.parts['a'].seconds == pytest.approx(2.5) and clock.parts['b'].seconds == pytest.approx(7.5)
    assert clock.parts['a'].peak_bytes == 50 and clock.parts['b'].peak_bytes == 300
    assert clock.total_seconds == pytest.approx(10.0) and clock.peak_bytes == 300


def test_saved_tensor_meter_counts_each_storage_once_and_skips_parameters():
    weight = nn.Parameter(torch.randn(256))
    x = torch.randn(256, requires_grad=True)
    meter = common.SavedTensorMeter(exclude=[weight])
    meter.begin()
    y = torch.exp(x)        # saves its result y: 1 KiB
    z = y * weight          # saves y (already counted) and weight (a parameter)
    first = meter.take()
    w = torch.sin(x)        # saves x: 1 KiB
    second = meter.take()
    meter.end()
    (z.sum() + w.sum()).backward()
    assert (first, second) == (256 * 4, 256 * 4)


def test_median_measures_take_the_median_of_each_part():
    runs = [{'a': common.PartMeasure(1.0, 10, 5)}, {'a': common.PartMeasure(3.0, 30, 5), 'b': common.PartMeasure(2.0)},
            {'a': common.PartMeasure(2.0, 20, 5)}]
    medians = common.median_measures(runs)
    assert medians['a'] == common.PartMeasure(2.0, 20, 5)
    assert medians['b'].seconds == 0.0  # absent from two runs out of three


def test_gpu_check_plumbing_writes_its_table(tmp_path):
    """benchmarks/gpu_check.py (what gpu_check.sh runs) at --device cpu --size tiny: the check list, one check run
    end to end as a subprocess, the Markdown table written to --out (the whole run takes minutes: benchmarks only)."""
    from benchmarks import gpu_check
    args = gpu_check.parse_args(['--device', 'cpu', '--size', 'tiny', '--out', str(tmp_path)])
    names = [c.name for c in gpu_check.checks(args, str(tmp_path / 'work'))]
    assert names == ['environment', 'train_diffbir', 'train_osediff', 'prefix', 'budget', 'lora_step', 'budget_lora',
                     'test', 'eval_throughput']
    assert gpu_check.main(['--device', 'cpu', '--size', 'tiny', '--out', str(tmp_path), '--only', 'environment']) == 0
    table = (tmp_path / 'gpu_check.md').read_text()
    # the CPU's bf16 support is named either way (native on AMX / AVX-512 BF16 CPUs, emulated on AVX2-only ones)
    assert '| environment | pass |' in table and ('bf16 native' in table or 'EMULATED' in table)


def test_refl_step_compares_the_prefix_variants_and_writes_json(tmp_path):
    """refl_step.py --grad-accum --compare-batched-prefix --json: both variants measured in one process, the JSON
    the issue names ({"variants": [{"batched_prefix": false, "seconds_per_face": …, "peak_rss_gib": …}, …]})."""
    import json
    out = tmp_path / 'prefix.json'
    report = refl_step.main(['--grad-accum', '2', '--compare-batched-prefix', '--steps', '3', '--repeats', '1',
                             '--warmup', '0', '--json', str(out)])
    variants = json.loads(out.read_text())['variants']
    assert [v['batched_prefix'] for v in variants] == [False, True]
    assert all(v['seconds_per_face'] > 0 and v['peak_rss_gib'] > 0 and 0 < v['prefix_share'] < 1 for v in variants)
    assert '| off | no |' in report and '| on | no |' in report
