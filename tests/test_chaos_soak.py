"""The short chaos soak (``benchmarks/chaos_soak.py --smoke``): a tiny ReFL run of 6 iterations, checkpoints every
2, SIGKILLed 3 times at random moments (one while a checkpoint or state file is being written), one kill followed
by the newest state or checkpoint cut in half; resumed each time with ``--auto_resume``, it ends bit for bit on the
uninterrupted run's ``net_g`` and ``net_frm``. The full soak (200 iterations, 12 faults; 2 ranks under torchrun):
docs/reliability.md."""
import os
import sys

import pytest
from option_files import ROOT

pytestmark = pytest.mark.heavy  # whole training runs: scheduled first (tests/conftest.py)

sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import chaos_soak  # noqa: E402


def test_smoke_soak_survives_every_kill_and_ends_bit_identical():
    result = chaos_soak.main(['--smoke'])
    faults = result['faults']
    assert len(faults) == 3 and sum('file' in f for f in faults) == 1 and sum('torn' in f for f in faults) == 1
    assert all(f['resumed_at'] is not None and f['lost'] >= 0 for f in faults), faults
    mid_write = next(f for f in faults if 'file' in f)
    assert mid_write['moment'].endswith('.tmp')  # killed with the temporary file written, not yet renamed
    torn = next(f for f in faults if 'torn' in f)
    if 'cut in half' in torn['moment']:  # a state existed to tear: the resume fell back past it
        assert torn['fallback'], torn
    assert result['max_abs_diff'] == 0.0
