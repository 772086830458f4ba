"""The label log: the labelling page's ``--out`` file, one decision of one person per line, never rewritten.

Each line is a pairs-format line (:mod:`drward.data.pairs_file`) plus the label-log fields::

    {"image_a": "face_0000/diffbir_s0.png", "image_b": "face_0000/degraded_0.png", "reference": "...",
     "label": 1.0, "source": "human", "confidence": 1.0,
     "event": "label", "annotator": "ana", "shown_left": "image_b", "seconds": 3.1, "time": "2026-12-03T09:30:00Z"}
    {"image_a": "...", "image_b": "...", "event": "skip", "annotator": "ana", ...}
    {"image_a": "...", "image_b": "...", "event": "undo", "annotator": "ana", ...}

``label`` is always P(the file's ``image_a`` preferred) whatever side it was shown on; ``shown_left`` says which of
the two was on the left. Replay rule: per ``(annotator, pair)`` a stack of decisions (``label`` and ``skip``
push, ``undo`` pops). The **labels in effect** are the top of each stack when it is a label; a pair labelled by
several annotators (the overlap) yields one row whose label is the mean of theirs (a soft label when they
disagree). :func:`~drward.data.pairs_file.labels_in_effect` is what :func:`drward.data.pairs_file.read_pairs` yields
for such a file.

:func:`append_record` writes one line with one ``write``, then flushes and ``fsync``s, so a killed server loses
at most the decision it was writing.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import List, Optional, Tuple

# the replay of a label log lives beside the pairs format (read_pairs yields a log's labels in effect); re-exported
from drward.data.pairs_file import (  # noqa: F401
    Decision,
    PairKey,
    PreferencePair,
    current_labels,
    decision_from_row,
    labels_in_effect,
    parse_pair_lines,
    replay,
)


def read_label_log(path: str | os.PathLike) -> Tuple[List[Decision], List[Tuple[int, str]]]:
    """``(decisions, malformed)``: the event lines in order, and ``(line number, error)`` of each line that could
    not be read (kept in the file, reported by the caller). A missing file is an empty log."""
    if not os.path.exists(path):
        return [], []
    decisions, malformed = [], []
    for line_no, obj, pair, error in parse_pair_lines(path):
        if error is not None:
            malformed.append((line_no, error))
        elif 'event' in obj:
            decisions.append(decision_from_row(line_no, obj, pair))
        else:
            malformed.append((line_no, 'a pairs line without "event" in a label log (ignored)'))
    return decisions, malformed


def utc_now() -> str:
    """The current time, UTC, ISO 8601 to the second (``2026-12-03T09:30:00Z``)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def decision_record(pair: PreferencePair, event: str, annotator: str, label: Optional[float] = None,
                    shown_left: Optional[str] = None, seconds: Optional[float] = None,
                    time: Optional[str] = None) -> dict:
    """The JSON object of one decision on ``pair`` (paths as they should be written)."""
    record = dataclasses.replace(pair, label=None, source=None, confidence=None).to_json()
    if event == 'label':
        record.update(label=float(label), source='human', confidence=1.0)
    record.update(event=event, annotator=annotator)
    if shown_left is not None:
        record['shown_left'] = shown_left
    if seconds is not None:
        record['seconds'] = round(float(seconds), 3)
    record['time'] = time or utc_now()
    return record


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and make it durable (flush + fsync); a torn last line left by a kill is closed with
    a newline first, so it stays one malformed line instead of swallowing this one."""
    line = json.dumps(record, ensure_ascii=False) + '\n'
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, 'rb') as f:
                f.seek(size - 1)
                if f.read(1) != b'\n':
                    line = '\n' + line
        os.write(fd, line.encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)
