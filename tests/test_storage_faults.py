"""Storage faults (``drward/utils/storage_faults.py``): a full disk during a save leaves the previous checkpoint and
state intact and stops the run with one line, and a resume after space is freed ends bit for bit on an
uninterrupted run; an output folder that cannot be written stops tools/train.py, tools/test.py and
tools/label_pairs.py before any work (both through benchmarks/storage_faults.py, whose figures these tests check).
A full disk is injected (``DRWARD_TEST_FAULT=enospc:<file>``, ``drward/utils/atomic_io.py``) and, where this
process may mount one, a real 256 KiB tmpfs."""
import os
import subprocess
import sys

import pytest
import torch
from option_files import ROOT

from drward.utils import atomic_io, storage_faults

pytestmark = pytest.mark.heavy  # whole training runs: scheduled first (tests/conftest.py)

sys.path.insert(0, ROOT)

from benchmarks import storage_faults as storage_fault_runs  # noqa: E402  (benchmarks/storage_faults.py)


class _Model:
    """A model whose ``save`` writes two files of iteration ``it`` atomically, as ReFLModel does."""

    def __init__(self, folder):
        self.folder, self.opt = folder, {'path': {'models': str(folder)}}

    def save(self, epoch, it):
        atomic_io.atomic_save({'w': torch.full((4,), float(it))}, os.path.join(self.folder, f'net_g_{it}.pth'))
        atomic_io.atomic_save({'iter': it}, os.path.join(self.folder, f'{it}.state'))


def test_an_injected_full_disk_stops_the_save_with_one_line_and_leaves_the_previous_files(tmp_path, monkeypatch):
    model, lines = _Model(tmp_path), []
    storage_faults.guard_saves(model, lines.append)
    model.save(0, 2)
    monkeypatch.setenv(atomic_io.FAULT_ENV, 'enospc:4.state')
    with pytest.raises(SystemExit) as stop:
        model.save(0, 4)
    assert stop.value.code == storage_faults.EXIT_DISK_FULL
    assert len(lines) == 1 and lines[0].startswith('Disk full while saving iteration 4') and '--auto_resume' in lines[0]
    assert sorted(os.listdir(tmp_path)) == ['2.state', 'net_g_2.pth', 'net_g_4.pth']  # no temporary file left
    assert torch.load(tmp_path / '2.state', weights_only=True) == {'iter': 2}


def test_other_save_errors_are_not_called_a_full_disk(tmp_path):
    model = _Model(tmp_path)
    storage_faults.guard_saves(model, print)
    model.folder = str(tmp_path / 'a_file')
    open(model.folder, 'w').close()
    with pytest.raises((OSError, RuntimeError)):
        model.save(0, 2)


def test_a_real_full_tmpfs_is_seen_as_a_full_disk(tmp_path):
    mount = tmp_path / 'small'
    mount.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip('cannot mount a tmpfs here (not root, or no mount permission)')
    try:
        model, lines = _Model(mount), []
        storage_faults.guard_saves(model, lines.append)
        model.save(0, 2)
        big = {'w': torch.zeros(200_000)}  # 800 kB: more than the tmpfs holds
        for path in (mount / 'net_g_4.pth', mount / 'net_g_4.safetensors'):
            with pytest.raises(Exception) as failure:
                atomic_io.atomic_save(big, str(path))
            assert getattr(failure.value, 'disk_full', False), failure.value
        assert sorted(os.listdir(mount)) == ['2.state', 'net_g_2.pth']
    finally:
        subprocess.run(['umount', str(mount)])


def test_unwritable_output_folders_stop_train_test_and_label_pairs_before_any_work(tmp_path):
    rows = storage_fault_runs.unwritable(str(tmp_path))  # the benchmark's run 2: each tool under a regular file
    blocker = tmp_path / 'file.txt'
    folders = {'tools/train.py': f'{blocker}/out', 'tools/test.py': f'{blocker}/out', 'tools/label_pairs.py': blocker}
    assert [row['tool'] for row in rows] == list(folders)
    for row in rows:
        assert row['status'] != 0 and not row['traceback']
        assert row['line'] == f"{os.path.basename(row['tool'])}: cannot write into {folders[row['tool']]} ({blocker} " \
                              'is a file, not a folder); make it writable, or run from a checkout where it is', row
    assert storage_faults.unwritable_reason(str(tmp_path / 'new' / 'folder')) is None  # created later by BasicSR


def test_a_run_stopped_by_a_full_disk_resumes_after_space_is_freed_and_ends_bit_identical(tmp_path):
    full = storage_fault_runs.disk_full(str(tmp_path), iters=6, every=2, at=4)
    assert full['status'] == storage_faults.EXIT_DISK_FULL, full
    assert full['line'].startswith('Disk full while saving iteration 4') and not full['traceback']
    assert full['states_left'] == ['2.state']
    assert 'Resuming training from epoch: 0, iter: 2.' in full['resumed']
    assert full['max_abs_diff'] == 0.0
