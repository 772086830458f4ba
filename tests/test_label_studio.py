"""Label Studio round trip: tasks + config out, an export in Label Studio's documented result format back in."""
import json
import xml.etree.ElementTree as ET

from drward.annotate.label_log import read_label_log
from drward.annotate.label_studio import export_tasks, import_export
from drward.data.pairs_file import PreferencePair, read_pairs


def _annotation(results, who=7, when='2026-12-03T10:00:00Z', cancelled=False):
    return {'id': 1, 'result': results, 'was_cancelled': cancelled, 'lead_time': 4.2, 'completed_by': who,
            'created_at': when, 'updated_at': when}


def _pairwise(selected):
    return {'from_name': 'preference', 'to_name': 'left,right', 'type': 'pairwise', 'value': {'selected': selected}}


def _choice(value):
    return {'from_name': 'other', 'to_name': 'left', 'type': 'choices', 'value': {'choices': [value]}}


def test_export_then_import_of_a_label_studio_export(tmp_path):
    pairs = [PreferencePair(str(tmp_path / f'face{i}' / 'a.png'), str(tmp_path / f'face{i}' / 'b.png'),
                            caption=f'face {i}') for i in range(5)]
    tasks_file = tmp_path / 'tasks.json'
    export_tasks(pairs, str(tasks_file))
    tasks = json.loads(tasks_file.read_text())
    config = ET.fromstring((tmp_path / 'tasks.config.xml').read_text())
    assert config.find('Pairwise').get('toName') == 'left,right'
    assert [c.get('value') for c in config.find('Choices')] == ['Tie', 'Skip']
    for task in tasks:
        left = task['data']['image_a'] if task['data']['shown_left'] == 'image_a' else task['data']['image_b']
        assert task['data']['left_image'] == '/data/local-files/?d=' + left[len(str(tmp_path)) + 1:]
    # what Label Studio's JSON export holds after people labelled the tasks
    tasks[0]['annotations'] = [_annotation([_pairwise('left')])]
    tasks[1]['annotations'] = [_annotation([_pairwise('right')]), _annotation([_pairwise('left')], who=8)]
    tasks[2]['annotations'] = [_annotation([_choice('Tie')])]
    tasks[3]['annotations'] = [_annotation([_choice('Skip')])]
    tasks[4]['annotations'] = [_annotation([_pairwise('left')], cancelled=True)]
    export = tmp_path / 'export.json'
    export.write_text(json.dumps(tasks))
    out = tmp_path / 'human.jsonl'
    summary = import_export(str(export), pairs, str(out))
    assert summary.startswith('imported 5 decisions')
    left_is_a = [t['data']['shown_left'] == 'image_a' for t in tasks]
    labels = {p.image_a: p.label for p in read_pairs(out)}
    assert labels == {'face0/a.png': float(left_is_a[0]), 'face1/a.png': 0.5, 'face2/a.png': 0.5}
    decisions, _ = read_label_log(out)
    assert [d.annotator for d in decisions][:2] == ['label-studio:7'] * 2 and decisions[0].seconds == 4.2
    assert decisions[1].label == float(not left_is_a[1]) and decisions[2].label == float(left_is_a[1])
    assert import_export(str(export), pairs, str(out)).startswith('imported 0 decisions')  # idempotent
