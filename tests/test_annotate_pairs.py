"""The pairs file: round trip, validation errors that name the line, path and caption resolution, merging."""
import json
import os

import pytest
from annotate_helpers import solid_rgb, write_rgb_png

from drward.annotate.collect import absolute_pairs, merge_human_labels, pairs_from_folder, relative_pairs
from drward.data.image_io import ImageListError
from drward.data.pairs_file import PairsFormatError, PreferencePair, pair_caption, read_pairs, write_pairs


def _write_lines(path, lines):
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path


def test_pairs_round_trip_keeps_every_field(tmp_path):
    pairs = [
        PreferencePair('a.png', 'b.png', caption='a smiling face', label=1.0, source='human', confidence=1.0),
        PreferencePair('c.png', 'd.png', caption_key='caps/c.txt', reference='gt/c.png', label=0.3, source='svm',
                       confidence=0.7),
        PreferencePair('e.png', 'f.png'),
    ]
    assert write_pairs(tmp_path / 'pairs.jsonl', pairs) == 3
    assert read_pairs(tmp_path / 'pairs.jsonl') == pairs
    first = json.loads((tmp_path / 'pairs.jsonl').read_text().splitlines()[2])
    assert first == {'image_a': 'e.png', 'image_b': 'f.png'}  # None fields are not written


def test_blank_and_comment_lines_are_skipped(tmp_path):
    path = _write_lines(tmp_path / 'p.jsonl', ['# header', '', '{"image_a": "a.png", "image_b": "b.png"}'])
    assert len(read_pairs(path)) == 1


@pytest.mark.parametrize('bad_line, fragment', [
    ('{"image_a": "a.png", "image_b": ', 'line 3'),
    ('{"image_a": "a.png"}', '"image_b" must be a non-empty string'),
    ('{"image_a": "a.png", "image_b": "b.png", "label": 1.5, "source": "human"}', '"label" must be in [0, 1]'),
    ('{"image_a": "a.png", "image_b": "b.png", "label": 1}', 'needs "source"'),
    ('{"image_a": "a.png", "image_b": "b.png", "label": 1, "source": "crowd"}', 'needs "source"'),
    ('{"image_a": "a.png", "image_b": "b.png", "source": "svm"}', 'has no "label"'),
    ('{"image_a": "a.png", "image_b": "b.png", "caption": "x", "caption_key": "k"}', 'not both'),
    ('{"image_a": "a.png", "image_b": "b.png", "prefered": "a"}', "unknown field(s) ['prefered']"),
    ('["a.png", "b.png"]', 'expected a JSON object'),
    ('{"image_a": "a.png", "image_b": "b.png", "label": true, "source": "human"}', 'must be a number'),
])
def test_malformed_line_is_skipped_and_named_with_file_and_line_number(tmp_path, bad_line, fragment):
    good = '{"image_a": "a.png", "image_b": "b.png"}'
    path = _write_lines(tmp_path / 'p.jsonl', [good, good, bad_line, good])
    reported = []
    assert len(read_pairs(path, report=reported.append)) == 3  # the rest are read
    assert len(reported) == 1 and f'{path}, line 3' in reported[0] and fragment in reported[0]
    with pytest.raises(PairsFormatError) as err:
        read_pairs(path, strict=True)
    assert f'{path}, line 3' in str(err.value) and fragment in str(err.value)
    only_bad = _write_lines(tmp_path / 'bad.jsonl', [bad_line])
    with pytest.raises(PairsFormatError, match='no readable line'):
        read_pairs(only_bad, report=reported.append)


def test_write_refuses_an_invalid_pair(tmp_path):
    with pytest.raises(PairsFormatError, match='pair 1'):
        write_pairs(tmp_path / 'p.jsonl', [PreferencePair('a', 'b'), PreferencePair('a', 'b', label=0.5)])
    assert not (tmp_path / 'p.jsonl').exists()


def test_caption_comes_from_text_then_key_file_then_fallback(tmp_path):
    (tmp_path / 'caps').mkdir()
    (tmp_path / 'caps' / 'one.txt').write_text('  a face in soft light \n')
    assert pair_caption(PreferencePair('a', 'b', caption='given'), tmp_path, 'fb') == 'given'
    assert pair_caption(PreferencePair('a', 'b', caption_key='caps/one.txt'), tmp_path, 'fb') == 'a face in soft light'
    assert pair_caption(PreferencePair('a', 'b'), tmp_path, 'fb') == 'fb'
    with pytest.raises(FileNotFoundError, match='caps/missing.txt'):
        pair_caption(PreferencePair('a', 'b', caption_key='caps/missing.txt'), tmp_path, 'fb')


def test_paths_become_absolute_and_back_relative(tmp_path):
    pairs = [PreferencePair('x/a.png', 'x/b.png', reference='gt.png', caption_key='c.txt')]
    absolute = absolute_pairs(pairs, str(tmp_path))
    assert absolute[0].image_a == os.path.join(str(tmp_path), 'x', 'a.png')
    assert relative_pairs(absolute, str(tmp_path)) == pairs
    outside = relative_pairs(absolute, str(tmp_path / 'x'))[0]
    assert outside.reference == os.path.join(str(tmp_path), 'gt.png')  # outside the folder: stays absolute


def test_human_labels_merge_in_either_order_and_extra_rows_are_appended():
    pairs = [PreferencePair('/f/a.png', '/f/b.png'), PreferencePair('/f/a.png', '/f/c.png')]
    human = [PreferencePair('/f/b.png', '/f/a.png', label=1.0, source='human'),  # reversed: B preferred
             PreferencePair('/g/x.png', '/g/y.png', label=0.0, source='human')]
    merged, matched = merge_human_labels(pairs, human)
    assert matched == 1
    assert merged[0].label == 0.0 and merged[0].source == 'human'
    assert merged[1].label is None
    assert merged[2].image_a == '/g/x.png'


def test_folder_of_faces_gives_within_face_pairs_with_reference_and_caption(tmp_path):
    for face in ('face1', 'face2'):
        for name in ('a', 'b', 'c', 'reference'):
            write_rgb_png(str(tmp_path / face / f'{name}.png'), solid_rgb(8, (10, 20, 30)))
    (tmp_path / 'face1' / 'caption.txt').write_text('an old man')
    pairs = pairs_from_folder(str(tmp_path))
    assert len(pairs) == 6  # three candidates per face → three pairs each; the reference is not a candidate
    assert all('reference' not in p.image_a and 'reference' not in p.image_b for p in pairs)
    assert {os.path.basename(os.path.dirname(p.reference)) for p in pairs} == {'face1', 'face2'}
    assert sum(p.caption_key is not None for p in pairs) == 3
    with pytest.raises(ImageListError, match='no sub-folder'):
        pairs_from_folder(str(tmp_path / 'face1'))
