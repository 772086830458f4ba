"""benchmarks/data_pipeline.py at its smallest (64², two faces, no workers): every stage and table is reported,
ratios are against the item with filter2D, and the demand rows follow from the constants. No timing assertions."""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from test_benchmarks import table_starting_with  # noqa: E402

from benchmarks import data_pipeline  # noqa: E402


def test_the_report_has_every_stage_the_loader_rates_and_the_demand(tmp_path):
    args = data_pipeline.parse_args(['--sizes', '64', '--images', '2', '--faces', '2', '--workers', '0',
                                      '--workdir', str(tmp_path), '--out', str(tmp_path / 'report.md')])
    report = data_pipeline.run_benchmark(args)
    headers, rows = table_starting_with(report, 'stage')
    stages = {row[0]: row for row in rows}
    assert {'read PNG (lmdb)', 'blur: cv2.filter2D (before)', 'blur: degrade.blur (now)', 'JPEG q',
            'item: __getitem__ (now)'} <= set(stages)
    assert stages['item: __getitem__ with filter2D (before)'][2] == '1.000'
    _, loader = table_starting_with(report, 'workers')
    assert [row[0] for row in loader] == ['0'] and float(loader[0][1]) > 0
    _, demand = table_starting_with(report, 'consumer')
    h100 = next(row for row in demand if row[0].startswith('DiffBIR') and 'H100' in row[0])
    assert h100[1] == f'{66 / 989:.3f}'  # 66 TFLOP per face at 989 TFLOP/s
    assert 'Conclusion:' in report

