"""tools/label_pairs.py with a label log that cannot be written: one clear line before any work (no page, no
pairs read), instead of a failure at an annotator's first click."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
TOOL = os.path.join(ROOT, 'tools', 'label_pairs.py')


def label_pairs_tool():
    spec = importlib.util.spec_from_file_location('label_pairs_tool', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def refusal(argv):
    with pytest.raises(SystemExit) as stop:
        label_pairs_tool().main(argv)
    return str(stop.value.code)


def test_a_label_log_under_a_file_is_refused_in_one_line_before_the_page_starts(tmp_path):
    blocker = tmp_path / 'file.txt'
    blocker.write_text('not a folder\n')
    pairs = tmp_path / 'missing_pairs.jsonl'  # never read: the check comes first
    out = blocker / 'labels.jsonl'
    run = subprocess.run([sys.executable, TOOL, '--pairs', str(pairs), '--out', str(out), '--port', '7701'],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    assert run.returncode == 1 and run.stdout == ''
    assert run.stderr.strip() == (f'label_pairs.py: cannot write into {blocker} ({blocker} is a file, not a folder); '
                                  'make it writable, or run from a checkout where it is'), run.stderr
    assert blocker.read_text() == 'not a folder\n'


def test_a_read_only_folder_and_a_folder_named_as_the_log_are_refused(tmp_path):
    folder = tmp_path / 'task'
    folder.mkdir()
    assert refusal(['--pairs', str(folder / 'pairs.jsonl'), '--out', str(folder)]) == \
        f'label_pairs.py: cannot append to {folder} (it is a folder, not a file)'
    if os.geteuid() == 0:
        pytest.skip('running as root: a read-only folder is still writable (the file.txt/labels.jsonl case holds)')
    folder.chmod(0o555)
    try:
        line = refusal(['--pairs', str(folder / 'pairs.jsonl')])  # the default log, task/human.jsonl
        assert line.startswith(f'label_pairs.py: cannot write into {folder} (Permission denied)'), line
        assert refusal(['--demo', str(folder / 'demo')]).startswith(f'label_pairs.py: cannot write into {folder}')
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []
