"""Every benchmark entry point (``benchmarks/*.py``) runs its ``--smoke`` mode: a benchmark cannot break unseen.

Each runs as a subprocess, as a person types it, and must exit 0 and print something. The smoke modes use the
smallest settings (tiny models, 32-64 px, one or two steps); what they print measures nothing. A new entry point
without a ``--smoke`` flag fails :func:`test_every_entry_point_is_smoked_or_excluded_with_a_reason`.
"""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.abspath(osp.join(osp.dirname(__file__), os.pardir))
ENTRY_POINTS = sorted(osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(ROOT, 'benchmarks', '*.py')))
#: Entry points whose smoke run is not here, and why.
EXCLUDED = {
    'chaos_soak': 'its --smoke run is tests/test_chaos_soak.py (kills and restarts training processes)',
    'eval_throughput': 'its --smoke run is tests/test_eval_throughput.py',
    'page_load': 'its --smoke run is tests/test_page_load.py (starts the restoration page)',
    'label_load': 'its --smoke run is tests/test_label_load_benchmark.py (needs the system Chromium)',
    'storage_faults': 'its runs are tests/test_storage_faults.py (three short trainings, over this test\'s limit)',
    'reliability_all': 'runs the --smoke of chaos_soak, storage_faults, label_load, page_load and hostile_readers, '
                       'each run by its own test; its table is tests/test_reliability_all.py (stub parts)',
    'cluster_reliability': 'needs torchrun with several processes; its scenarios are tests/test_elastic*.py',
    'gpu_check': 'a CUDA check (real SD 2.1 sizes); run on a GPU machine, docs/speed.md',
    'rehearsal': 'writes real-size random weight files (GBs); its jobs are checked by tests/test_rehearsal_jobs.py',
    'load_real_weights': 'loads real-size weight files (GBs) given on the command line',
    'precision_speed': 'times a real-size SD UNet in bf16, emulated on CPUs without native bf16 (minutes)',
}
SMOKED = [name for name in ENTRY_POINTS if name not in EXCLUDED]
#: Wall-clock limit of one smoke run (import of torch and BasicSR included, a contended 2-core CPU).
LIMIT_S = 300


def test_every_entry_point_is_smoked_or_excluded_with_a_reason():
    assert set(EXCLUDED) <= set(ENTRY_POINTS), sorted(set(EXCLUDED) - set(ENTRY_POINTS))
    for name in SMOKED:
        with open(osp.join(ROOT, 'benchmarks', f'{name}.py')) as handle:
            text = handle.read()
        assert "'--smoke'" in text or 'add_smoke_flag(' in text, f'benchmarks/{name}.py: no --smoke mode'


@pytest.mark.heavy
@pytest.mark.parametrize('name', SMOKED)
def test_benchmark_smoke_mode_runs(name, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])),
               OMP_NUM_THREADS='1', TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, osp.join('benchmarks', f'{name}.py'), '--smoke'], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=LIMIT_S)
    assert result.returncode == 0, f'benchmarks/{name}.py --smoke exited {result.returncode}:\n{result.stderr[-3000:]}'
    assert (result.stdout + result.stderr).strip(), f'benchmarks/{name}.py --smoke printed nothing'
