"""benchmarks/reliability_all.py assembles one table from the reliability benchmarks: here with stub parts (the parts
themselves are run by their own tests: test_chaos_soak, test_storage_faults, test_label_load_benchmark,
test_page_load, test_hostile_images). A part that fails is a row saying so, the other parts still run, and the exit
status is 1."""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import reliability_all  # noqa: E402


def row(part, ok=True):
    return {'part': part, 'tried': '3 kills', 'held': '3 / 3 survived', 'figures': 'p95 1 s', 'ok': ok}


def test_one_table_in_the_order_faults_load_bad_inputs_and_a_failing_part_is_a_row(monkeypatch, tmp_path, capsys):
    ran = []

    def chaos(ranks, smoke):
        ran.append(f'chaos{ranks}')
        assert smoke
        if ranks == 2:
            raise RuntimeError('the soak run ended with status 1')
        return row('chaos soak, 1 process')

    monkeypatch.setattr(reliability_all, 'chaos', chaos)
    monkeypatch.setattr(reliability_all, 'storage', lambda smoke: ran.append('storage') or row('storage faults'))
    monkeypatch.setattr(reliability_all, 'labelling', lambda smoke, port: ran.append('label') or row('labelling'))
    out = tmp_path / 'table.md'
    code = reliability_all.main(['--smoke', '--only', 'chaos1', 'chaos2', 'storage', 'label', '--out', str(out)])
    assert code == 1 and ran == ['label', 'storage', 'chaos1', 'chaos2']  # the labelling page runs first
    lines = out.read_text().splitlines()
    assert lines[0].startswith('| part | faults injected / load / bad inputs tried |')
    parts = [line.split(' | ')[0].lstrip('| ') for line in lines[2:6]]
    assert parts == ['chaos soak, 1 process', 'chaos2', 'storage faults', 'labelling']
    assert lines[3].endswith('| NO |') and 'FAILED: RuntimeError: the soak run ended with status 1' in lines[3]
    assert all(line.endswith('| yes |') for line in (lines[2], lines[4], lines[5]))
    assert lines[-1].startswith('--smoke: CPU ')
    assert '## Reliability, all parts' in capsys.readouterr().out


def test_hostile_readers_are_counted_per_bad_file_and_the_good_photo_per_reader(monkeypatch):
    rows = [('header check alone', '0.05 ms', 'bomb.png declares 576.0 megapixels'),
            ('tools/restore.py', 'restored_imgs: astronaut.png', 'bomb.png: skipped; truncated.jpg: skipped; '
             'notes.png: skipped'),
            ('tools/make_lmdb.py', 'built 1', 'bomb.png: skipped; truncated.jpg: (not named); notes.png: skipped')]
    monkeypatch.setattr(reliability_all.hostile_readers, 'readers', lambda skip_tools: rows)
    result = reliability_all.readers(smoke=True)
    assert result['tried'] == '7 bad files through 3 readers'
    assert result['held'].startswith('6 / 7 refused') and 'kept by 1 / 2 readers' in result['held']
    assert result['ok'] is False
