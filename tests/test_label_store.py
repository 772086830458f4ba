"""The label log and its store: append-only decisions, labels in effect, resume, assignment, overlap."""
import json

import pytest

from drward.annotate.label_log import append_record, read_label_log
from drward.annotate.label_store import LabelStore, label_of_choice, overlap_indices
from drward.data.pairs_file import PairsFormatError, PreferencePair, read_pairs


def _pairs(tmp_path, n=6):
    return [PreferencePair(str(tmp_path / f'f{i}' / 'a.png'), str(tmp_path / f'f{i}' / 'b.png')) for i in range(n)]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_label_means_image_a_preferred_whatever_side_it_was_shown_on():
    assert label_of_choice('left', 'image_a') == 1.0 and label_of_choice('right', 'image_a') == 0.0
    assert label_of_choice('left', 'image_b') == 0.0 and label_of_choice('right', 'image_b') == 1.0
    assert label_of_choice('tie', 'image_b') == 0.5


def test_read_pairs_yields_the_labels_in_effect_one_per_pair(tmp_path):
    out = tmp_path / 'human.jsonl'
    store = LabelStore(_pairs(tmp_path), str(out), order='file')
    first = store.current('ana')
    store.decide('ana', 'left')        # pair 0 labelled
    store.decide('ana', 'skip')        # pair 1 skipped: never a label
    store.decide('ana', 'tie')         # pair 2 tie
    again = store.undo('ana')          # cancels the tie and shows pair 2 again
    assert again.index == 2
    store.decide('ana', 'right')       # pair 2 relabelled
    records = _lines(out)
    assert [r['event'] for r in records] == ['label', 'skip', 'label', 'undo', 'label']
    assert all(r['annotator'] == 'ana' and 'time' in r for r in records)
    assert all(r['shown_left'] in ('image_a', 'image_b') and r['seconds'] >= 0 for r in records if r['event'] != 'undo')
    labels = read_pairs(out)
    assert [(p.image_a, p.label, p.source) for p in labels] == [
        ('f0/a.png', label_of_choice('left', first.shown_left), 'human'),
        ('f2/a.png', label_of_choice('right', records[4]['shown_left']), 'human')]
    assert out.read_text().startswith(json.dumps(records[0]))  # paths relative to the out file's folder


def test_relaunch_resumes_at_the_first_pair_without_a_decision(tmp_path):
    out = tmp_path / 'human.jsonl'
    store = LabelStore(_pairs(tmp_path), str(out), order='random', seed=3)
    seen = [store.current('ana').index]
    for choice in ('left', 'skip', 'right'):
        seen.append(store.decide('ana', choice).index)
    resumed = LabelStore(_pairs(tmp_path), str(out), order='random', seed=3)
    assert resumed.current('ana').index == seen[3]  # the one on screen at the "kill" had no decision
    assert resumed.progress('ana') == (2, 2, 6)


def test_a_malformed_line_is_reported_with_its_number_and_kept(tmp_path):
    out = tmp_path / 'human.jsonl'
    store = LabelStore(_pairs(tmp_path), str(out), order='file')
    store.current('ana')
    store.decide('ana', 'left')
    with open(out, 'a') as f:
        f.write('{"image_a": "f1/a.png", "image_b": ')  # a torn line
    before = out.read_text()
    store = LabelStore(_pairs(tmp_path), str(out), order='file')
    assert [n for n, _ in store.malformed] == [2]
    store.current('ana')
    store.decide('ana', 'right')
    assert out.read_text().startswith(before) and len(out.read_text().splitlines()) == 3
    decisions, malformed = read_label_log(out)
    assert len(decisions) == 2 and [n for n, _ in malformed] == [2]
    reported = []
    assert len(read_pairs(out, report=reported.append)) == 2  # the torn line skipped, the two labels read
    assert len(reported) == 1 and 'human.jsonl, line 2' in reported[0]
    with pytest.raises(PairsFormatError, match='line 2'):
        read_pairs(out, strict=True)


def test_two_annotators_never_share_a_pair_outside_the_overlap(tmp_path):
    out = tmp_path / 'human.jsonl'
    pairs = _pairs(tmp_path, 20)
    store = LabelStore(pairs, str(out), order='random', overlap=0.2)
    assert len(store.overlap) == 4 and store.overlap == overlap_indices(20, 0.2)
    done = {'ana': [], 'bo': []}
    for _ in range(30):
        for who in done:
            shown = store.current(who)
            if shown is None:
                continue
            other = store._shown.get('bo' if who == 'ana' else 'ana')
            assert other is None or other.index != shown.index or shown.index in store.overlap
            done[who].append(shown.index)
            store.decide(who, 'left')
    shared = set(done['ana']) & set(done['bo'])
    assert shared == set(store.overlap)
    assert set(done['ana']) | set(done['bo']) == set(range(20))
    assert len(read_pairs(out)) == 20  # overlap pairs: one row each (the mean of both labels)


def test_overlap_pairs_yield_the_mean_label(tmp_path):
    out = tmp_path / 'human.jsonl'
    pair = PreferencePair('a.png', 'b.png')
    for who, label in (('ana', 1.0), ('bo', 0.0)):
        append_record(out, {**pair.to_json(), 'label': label, 'source': 'human', 'event': 'label', 'annotator': who})
    assert [p.label for p in read_pairs(out)] == [0.5]


def test_non_loopback_without_auth_warns_and_auth_parses():
    from drward.annotate.label_page import exposure_warning, parse_auth
    assert exposure_warning('127.0.0.1', None) is None and exposure_warning('localhost', None) is None
    assert exposure_warning('::1', None) is None and exposure_warning('0.0.0.0', ('u', 'p')) is None
    assert '--auth' in exposure_warning('0.0.0.0', None) and '192.168.1.5' in exposure_warning('192.168.1.5', None)
    assert parse_auth('ana:secret:x') == ('ana', 'secret:x') and parse_auth(None) is None
    with pytest.raises(ValueError, match='USER:PASS'):
        parse_auth('ana')


def test_a_click_for_a_pair_no_longer_current_is_refused_and_racing_clicks_record_one_decision(tmp_path):
    import threading

    from drward.annotate.label_store import StaleClick
    out = tmp_path / 'human.jsonl'
    store = LabelStore(_pairs(tmp_path, 8), str(out), order='file')
    first = store.current('ana').index
    outcomes, start = [], threading.Barrier(6)

    def click(choice):
        start.wait()
        try:
            store.decide('ana', choice, expected=first)
            outcomes.append('recorded')
        except StaleClick as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=click, args=(c,)) for c in ('left', 'right', 'tie', 'skip', 'left', 'tie')]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count('recorded') == 1 and len(_lines(out)) == 1  # the other five named the old pair
    assert all(f'pair #{first}, no longer on screen' in o for o in outcomes if o != 'recorded')
    now = store.current('ana').index
    store.undo('ana', expected=now)                     # shows pair `first` again
    with pytest.raises(StaleClick):
        store.undo('ana', expected=now)                 # a double click on Undo undoes nothing more
    assert [r['event'] for r in _lines(out)] == [_lines(out)[0]['event'], 'undo']


def test_a_failed_write_leaves_the_pair_on_screen_and_nothing_recorded(tmp_path, monkeypatch):
    import drward.annotate.label_store as label_store
    out = tmp_path / 'human.jsonl'
    store = LabelStore(_pairs(tmp_path), str(out), order='file')
    shown = store.current('ana').index

    def full_disk(path, record):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(label_store, 'append_record', full_disk)
    with pytest.raises(OSError):
        store.decide('ana', 'left', expected=shown)
    assert store.current('ana').index == shown and store.labels() == {}
    monkeypatch.undo()
    assert store.decide('ana', 'left', expected=shown).index != shown and len(_lines(out)) == 1
