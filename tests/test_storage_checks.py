"""The start-up checks of drward/utils/storage_faults.py in-process: a folder that cannot be written, a log that
cannot be appended to. Each stops with one line naming the tool, the path and why (the tools' own runs of these
checks: tests/test_storage_faults.py, tests/test_label_log_unwritable.py)."""
import errno
import os

import pytest

from drward.utils import storage_faults
from drward.utils.storage_faults import check_appendable, check_writable, unwritable_reason


def test_a_folder_under_a_regular_file_is_named_as_a_file(tmp_path):
    blocker = tmp_path / 'file.txt'
    blocker.write_text('x')
    assert unwritable_reason(str(tmp_path / 'new')) is None  # a missing folder under a writable one is fine
    assert unwritable_reason(str(blocker / 'runs')) == f'{blocker} is a file, not a folder'
    with pytest.raises(SystemExit) as stop:
        check_writable([str(tmp_path), str(blocker / 'runs')], 'train.py')
    assert str(stop.value).startswith(f'train.py: cannot write into {blocker / "runs"} ({blocker} is a file')
    assert '\n' not in str(stop.value)


def test_a_folder_the_os_refuses_gives_the_os_reason(tmp_path, monkeypatch):
    def refuse(**_):
        raise PermissionError(errno.EACCES, 'Permission denied')
    monkeypatch.setattr(storage_faults.tempfile, 'mkstemp', refuse)
    assert unwritable_reason(str(tmp_path)) == 'Permission denied'
    assert os.listdir(tmp_path) == []


def test_a_log_is_appendable_unless_it_is_a_folder_or_refuses_appending(tmp_path, monkeypatch):
    log = tmp_path / 'labels.jsonl'
    check_appendable(str(log), 'label_pairs.py')  # not there yet: its folder is writable
    log.write_text('{"a": 1}\n')
    check_appendable(str(log), 'label_pairs.py')
    assert log.read_text() == '{"a": 1}\n'  # opened for appending, not changed
    with pytest.raises(SystemExit, match=r'cannot append to .*labels_dir \(it is a folder, not a file\)'):
        (tmp_path / 'labels_dir').mkdir()
        check_appendable(str(tmp_path / 'labels_dir'), 'label_pairs.py')

    def read_only(*_args, **_kw):
        raise PermissionError(errno.EACCES, 'Permission denied')
    monkeypatch.setattr(storage_faults, 'open', read_only, raising=False)
    with pytest.raises(SystemExit, match=r'^label_pairs.py: cannot append to .*labels.jsonl \(Permission denied\)'):
        check_appendable(str(log), 'label_pairs.py')
