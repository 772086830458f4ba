"""benchmarks/label_load.py --smoke: annotators in a browser and over HTTP at once, a kill -9 of the server in the
middle, and the log checked against every answer the page gave (the full run is a benchmark, not a test)."""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from browser_helpers import free_port, why_no_browser  # noqa: E402

from benchmarks import label_load  # noqa: E402


def test_smoke_load_with_a_kill_loses_nothing_acknowledged(request, tmp_path):
    browser = None if why_no_browser() else request.getfixturevalue('browser')
    args = label_load.parse_args(['--smoke', '--port', str(free_port()), '--workdir', str(tmp_path),
                                  '--browsers', '1' if browser else '0', '--deadline-s', '240'])
    result = label_load.run(args, browser=browser)
    print('\n' + label_load.table(result))
    assert result['errors'] == []
    assert result['kills'] == 1 and result['recorded'] > 0
    assert result['recorded'] + result['not recorded'] + result['failed in flight'] == result['planned']
    assert {name: count for name, count in result['checks'].items() if count} == {}


def test_the_kill_comes_while_every_annotator_has_an_action_left_for_the_relaunched_server():
    from benchmarks.lib.label_load_clients import Annotator
    ahead = Annotator('ahead', ['left', 'right', 'undo', 'tie', 'skip'], recorded=[(0, 'left'), (1, 'right')])
    assert label_load.kill_due(0.4, answers=2, planned=40, annotator=ahead) is False  # 3 left, 2 of 40 answered
    ahead.recorded.append((1, 'undo'))
    assert label_load.kill_due(0.4, answers=3, planned=40, annotator=ahead) is True  # 2 left: kill now
    assert label_load.kill_due(0.4, answers=16, planned=40, annotator=Annotator('slow', ['left'] * 9)) is True
    assert label_load.kill_due(0.0, answers=39, planned=40, annotator=ahead) is False  # --kill-at 0: never


def test_the_checks_catch_a_lost_label_and_a_label_filed_under_another_name(tmp_path):
    """The checker itself: a log missing an acknowledged line, or holding one under the wrong name, fails."""
    import json

    from benchmarks.lib.label_load_clients import Annotator
    pairs_file = label_load.make_task(str(tmp_path), annotators=1, pairs=2, seed=0)
    with open(pairs_file) as f:
        first = json.loads(f.readline())
    out = tmp_path / 'human.jsonl'
    record = dict(first, label=1.0, source='human', confidence=1.0, event='label', annotator='seed')
    out.write_text(json.dumps(record) + '\n')
    ana = Annotator('ana', ['left'], recorded=[(0, 'left')])
    checks = label_load.check_log(str(out), pairs_file, [ana])
    assert checks['acknowledged lost'] == 1 and checks['logged, never acknowledged, not in flight'] == 1
    out.write_text(json.dumps(dict(record, annotator='ana')) + '\n')
    assert not any(label_load.check_log(str(out), pairs_file, [ana]).values())


if __name__ == '__main__':
    pytest.main([__file__, '-q', '-s'])
