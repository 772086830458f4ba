"""Every reader of preference-pair and label-log JSONL, given a file with broken lines: each broken line is skipped
and named with its line number, and the rest are read (docs/labelling.md, "Broken lines")."""
import importlib.util
import json
import logging
import os

import pytest
from annotate_helpers import solid_rgb, write_rgb_png

from drward.annotate.label_log import decision_record, read_label_log
from drward.annotate.label_page import report_malformed
from drward.annotate.label_report import report_lines
from drward.annotate.label_store import LabelStore
from drward.data.pairs_file import PairsFormatError, PreferencePair, read_pairs
from drward.data.preference_pair_dataset import PreferencePairDataset

TOOLS = os.path.join(os.path.dirname(__file__), os.pardir, 'tools')
BROKEN = {2: '{"image_a": "images/a.png", "image_b": ',                                   # torn by a kill
          4: 'not json at all',
          5: '{"image_a": "images/a.png", "image_b": "images/b.png", "label": 7, "source": "human"}',  # out of range
          7: '["images/a.png", "images/b.png"]'}                                           # not an object


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'{name}_tool', os.path.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_broken_lines(path, good_lines):
    """``good_lines`` at lines 1, 3, 6, 8, ... with the BROKEN lines at their numbers; returns the path."""
    good, lines = iter(good_lines), []
    for number in range(1, len(good_lines) + len(BROKEN) + 1):
        lines.append(BROKEN[number] if number in BROKEN else next(good))
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


@pytest.fixture
def folder(tmp_path):
    write_rgb_png(str(tmp_path / 'images' / 'a.png'), solid_rgb(16, (200, 20, 20)))
    write_rgb_png(str(tmp_path / 'images' / 'b.png'), solid_rgb(16, (20, 20, 200)))
    write_rgb_png(str(tmp_path / 'images' / 'c.png'), solid_rgb(16, (20, 200, 20)))
    return tmp_path


def _pairs_lines(labelled=True):
    names = [('a', 'b'), ('b', 'c'), ('a', 'c'), ('c', 'a')]
    extra = {'label': 1.0, 'source': 'human'} if labelled else {}
    return [json.dumps({'image_a': f'images/{x}.png', 'image_b': f'images/{y}.png', **extra}) for x, y in names]


def _log_lines():
    return [json.dumps(decision_record(PreferencePair(f'images/{x}.png', f'images/{y}.png'), 'label', who, 1.0,
                                       'image_a', 1.0)) for x, y, who in (('a', 'b', 'ana'), ('b', 'c', 'ana'),
                                                                          ('a', 'c', 'bo'), ('c', 'a', 'bo'))]


def _named_all(messages):
    text = '\n'.join(messages)
    return all(f'line {n}:' in text or f'line {n} ' in text for n in BROKEN)


def test_read_pairs_skips_each_broken_line_by_number_and_reads_the_rest(folder):
    reported = []
    pairs = read_pairs(_with_broken_lines(folder / 'pairs.jsonl', _pairs_lines()), report=reported.append)
    assert len(pairs) == 4 and len(reported) == len(BROKEN) and _named_all(reported)
    labels = read_pairs(_with_broken_lines(folder / 'human.jsonl', _log_lines()), report=reported.append)
    assert len(labels) == 4 and all(p.label == 1.0 and p.source == 'human' for p in labels)


def test_read_pairs_names_broken_lines_on_stderr_by_default(folder, caplog):
    with caplog.at_level(logging.WARNING, logger='drward.data.pairs_file'):
        assert len(read_pairs(_with_broken_lines(folder / 'pairs.jsonl', _pairs_lines()))) == 4
    assert _named_all(r.getMessage() for r in caplog.records)
    assert all('(line skipped)' in r.getMessage() for r in caplog.records)


def test_label_log_readers_store_and_report_skip_broken_lines(folder, capsys):
    log = _with_broken_lines(folder / 'human.jsonl', _log_lines())
    decisions, malformed = read_label_log(log)
    assert len(decisions) == 4 and sorted(n for n, _ in malformed) == sorted(BROKEN)
    pairs = [PreferencePair(str(folder / 'images' / f'{x}.png'), str(folder / 'images' / f'{y}.png'))
             for x, y in (('a', 'b'), ('b', 'c'), ('a', 'c'), ('c', 'a'), ('b', 'a'))]
    store = LabelStore(pairs, log, order='file')
    assert len(store.labels()) == 4 and store.current('ana').index in (2, 3, 4)  # resumed past its two labels
    assert _named_all(report_malformed(store))
    assert all(f'{n}' in report_lines(log, metrics=None)[0] for n in BROKEN)


def test_the_tools_read_the_rest_of_a_file_with_broken_lines(folder, caplog):
    pairs_file = _with_broken_lines(folder / 'pairs.jsonl', _pairs_lines(labelled=False))
    human = _with_broken_lines(folder / 'human.jsonl', _log_lines())
    with caplog.at_level(logging.WARNING, logger='drward.data.pairs_file'):
        annotate = _tool('annotate')
        pairs, _, _ = annotate.load_pairs(annotate.parse_args(['--pairs', pairs_file, '--human-labels', human]))
        assert len(pairs) == 4 and sum(p.is_human for p in pairs) == 4
        label_pairs = _tool('label_pairs')
        task, out = label_pairs.task_pairs(label_pairs.parse_args(['--pairs', pairs_file]))
        assert len(task) == 4 and out.endswith('human.jsonl')
    messages = [r.getMessage() for r in caplog.records]
    assert _named_all(m for m in messages if 'pairs.jsonl' in m) and _named_all(m for m in messages if 'human' in m)


def test_the_preference_pair_dataset_trains_on_the_readable_lines(folder, caplog):
    pairs_file = _with_broken_lines(folder / 'pairs.jsonl', _pairs_lines())
    with caplog.at_level(logging.WARNING, logger='drward.data.pairs_file'):
        dataset = PreferencePairDataset({'pairs_file': pairs_file, 'image_size': 16})
    assert len(dataset) == 4 and dataset[0]['img_a'].shape == (3, 16, 16)
    assert _named_all(r.getMessage() for r in caplog.records)


def test_a_file_with_no_readable_line_is_refused_with_its_first_error(folder):
    (folder / 'bad.jsonl').write_text(BROKEN[4] + '\n' + BROKEN[2] + '\n')
    with pytest.raises(PairsFormatError, match=r'no readable line \(2 malformed; first: .*bad.jsonl, line 1'):
        read_pairs(folder / 'bad.jsonl', report=lambda message: None)
