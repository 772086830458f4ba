"""Label Studio round trip: export the pairs as Label Studio tasks (+ labelling config), import its export.

Export (``--export-label-studio tasks.json``): one task per pair; ``data`` holds ``left_image`` / ``right_image``
(Label Studio local-files URLs, ``/data/local-files/?d=<path relative to the pairs folder>``: start Label Studio
with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<the pairs
folder>``), the caption, ``shown_left`` (which of the pairs file's ``image_a`` / ``image_b`` is on the left,
seeded random per pair) and the pair's own absolute paths (``image_a`` / ``image_b``), by which the import
finds the pair again. ``tasks.config.xml`` next to it is
the labelling config: a ``Pairwise`` tag over the two images plus a ``Choices`` tag for Tie / Skip.

Import (``--import-label-studio export.json``): Label Studio's JSON export, a list of tasks each with
``annotations[].result[]``; a result of ``"type": "pairwise"`` with ``"value": {"selected": "left" | "right"}`` is
a label (mapped through ``shown_left`` to P(image_a preferred)), a ``choices`` result ``Tie`` is a ½ label and
``Skip`` a skip; cancelled annotations are ignored. Each becomes a label-log line (annotator
``label-studio:<completed_by>``, ``seconds`` = ``lead_time``); importing the same export twice adds nothing.
"""
from __future__ import annotations

import json
import os
import random
from typing import List, Optional, Sequence

from drward.annotate.collect import relative_pairs
from drward.annotate.label_log import append_record, decision_record, read_label_log
from drward.annotate.label_store import label_of_choice
from drward.data.pairs_file import PreferencePair, pair_caption

LABEL_CONFIG = """<View>
  <Header value="$caption"/>
  <Pairwise name="preference" toName="left,right"/>
  <View style="display: flex; gap: 1em;">
    <Image name="left" value="$left_image"/>
    <Image name="right" value="$right_image"/>
  </View>
  <Choices name="other" toName="left" choice="single" showInline="true">
    <Choice value="Tie"/>
    <Choice value="Skip"/>
  </Choices>
</View>
"""
LOCAL_FILES = '/data/local-files/?d='


def export_tasks(pairs: Sequence[PreferencePair], tasks_json: str, seed: int = 0) -> str:
    """Write ``tasks_json`` and ``<stem>.config.xml`` for ``pairs`` (absolute paths); returns a summary line."""
    base_dir = os.path.dirname(os.path.abspath(tasks_json))
    written = relative_pairs(pairs, base_dir)
    sides = random.Random(seed)
    tasks = []
    for index, (pair, rel) in enumerate(zip(pairs, written)):
        shown_left = 'image_a' if sides.random() < 0.5 else 'image_b'
        left, right = (rel.image_a, rel.image_b) if shown_left == 'image_a' else (rel.image_b, rel.image_a)
        tasks.append({'data': {'left_image': LOCAL_FILES + left, 'right_image': LOCAL_FILES + right,
                               'caption': pair_caption(pair, base_dir, fallback='') or '', 'shown_left': shown_left,
                               'image_a': pair.image_a, 'image_b': pair.image_b, 'pair_index': index}})
    with open(tasks_json, 'w', encoding='utf-8') as f:
        json.dump(tasks, f, indent=1, ensure_ascii=False)
    config = os.path.splitext(tasks_json)[0] + '.config.xml'
    with open(config, 'w', encoding='utf-8') as f:
        f.write(LABEL_CONFIG)
    return (f'wrote {len(tasks)} Label Studio tasks to {tasks_json} and the labelling config to {config}; serve '
            f'the images with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true '
            f'LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={base_dir}')


def _choice_of(results: List[dict]) -> Optional[str]:
    """``left`` / ``right`` / ``tie`` / ``skip`` from one annotation's results, or None when it holds none."""
    for result in results:
        if result.get('type') == 'choices':
            picked = [c.lower() for c in result.get('value', {}).get('choices', [])]
            if 'tie' in picked:
                return 'tie'
            if 'skip' in picked:
                return 'skip'
    for result in results:
        if result.get('type') == 'pairwise':
            selected = result.get('value', {}).get('selected')
            if selected in ('left', 'right'):
                return selected
            raise ValueError(f'pairwise result with "selected" {selected!r}; expected "left" or "right"')
    return None


def _annotator(annotation: dict) -> str:
    who = annotation.get('completed_by')
    if isinstance(who, dict):
        who = who.get('email') or who.get('id')
    return f'label-studio:{who if who is not None else "unknown"}'


def import_export(export_json: str, pairs: Sequence[PreferencePair], out: str) -> str:
    """Append the decisions of a Label Studio export to the label log ``out``; returns a summary line."""
    with open(export_json, encoding='utf-8') as f:
        tasks = json.load(f)
    if not isinstance(tasks, list):
        raise ValueError(f'{export_json}: expected Label Studio\'s JSON export (a list of tasks)')
    out = os.path.abspath(out)
    base_dir = os.path.dirname(out)
    written = {(p.image_a, p.image_b): rel for p, rel in zip(pairs, relative_pairs(pairs, base_dir))}
    done = {(d.annotator, d.key, d.time) for d in read_label_log(out)[0]}
    added = ignored = 0
    for number, task in enumerate(tasks):
        data = task.get('data', {})
        pair = written.get((data.get('image_a'), data.get('image_b')))
        if pair is None:
            raise ValueError(f'{export_json}, task {number}: pair {data.get("image_a")} / {data.get("image_b")} '
                             f'is not in the task\'s pairs file')
        for annotation in task.get('annotations', []):
            choice = _choice_of(annotation.get('result', []))
            if annotation.get('was_cancelled') or choice is None:
                ignored += 1
                continue
            who, when = _annotator(annotation), annotation.get('updated_at') or annotation.get('created_at')
            key = (pair.image_a, pair.image_b)
            if (who, key, when) in done:
                continue
            event = 'skip' if choice == 'skip' else 'label'
            label = None if event == 'skip' else label_of_choice(choice, data.get('shown_left', 'image_a'))
            append_record(out, decision_record(pair, event, who, label, data.get('shown_left'),
                                               annotation.get('lead_time'), when))
            done.add((who, key, when))
            added += 1
    return f'imported {added} decisions from {export_json} into {out} ({ignored} cancelled or empty annotations)'
