"""The preference-pairs file: one JSON object per line (JSONL), read and written here.

The format sits in the data layer because :class:`~drward.data.preference_pair_dataset.PreferencePairDataset` reads
it; the labelling tools (``drward/annotate/``) write it and build on it.

Each line is one pair of images of the same face, and (when labelled) which one people prefer::

    {"image_a": "faces/0001_a.png", "image_b": "faces/0001_b.png", "caption": "a photo of a young woman",
     "label": 1.0, "source": "human", "confidence": 1.0}

Fields
    ``image_a``, ``image_b``  (required) image paths; relative paths are relative to the pairs file's folder.
    ``caption``              the text the FRM scores the images against, **or**
    ``caption_key``          a path to a ``.txt`` file holding the caption (relative like the images);
                             with neither, readers use their fallback caption.
    ``reference``            (optional) the pair's reference image (e.g. the ground truth or the LQ input);
                             fidelity metrics (identity, landmarks) compare each image with it.
    ``label``                P(A preferred) in [0, 1]: 1 = A preferred, 0 = B preferred, 0.5 = tie, any value
                             between = a soft label; ``null`` or absent = unlabelled.
    ``source``               ``"human"`` or ``"svm"``; required when ``label`` is set, absent otherwise.
    ``confidence``           (optional) in [0, 1]: 1 for human labels, the SVM's probability of the label it
                             chose for ``svm`` rows.

Label-log fields (the labelling page's ``--out`` file, :mod:`drward.annotate.label_log`)
    ``event``                ``"label"``, ``"skip"`` or ``"undo"``: one decision of one person, appended in order;
    ``annotator``, ``shown_left`` (``"image_a"`` or ``"image_b"``: which one was on the left), ``seconds`` (time
    on the pair) and ``time`` (UTC, ISO 8601) describe it. A file holding such records is a label log:
    :func:`read_pairs` yields its labels in effect (skips and undone labels removed), one row per pair.

A malformed line (bad JSON, a torn last line, a field out of range) is skipped and named with its file and line
number, and the rest of the file is read (:func:`read_pairs`; ``strict=True`` raises :class:`PairsFormatError` on
the first instead). A file with malformed lines and no readable line raises.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

LABEL_SOURCES = ('human', 'svm')
PAIR_FIELDS = ('image_a', 'image_b', 'caption', 'caption_key', 'reference', 'label', 'source', 'confidence')
LOG_FIELDS = ('event', 'annotator', 'shown_left', 'seconds', 'time')
LOG_EVENTS = ('label', 'skip', 'undo')


class PairsFormatError(ValueError):
    """A pairs file line that does not follow the format above; the message names the file and line."""


@dataclasses.dataclass
class PreferencePair:
    """One pair; ``label`` is P(image_a preferred) or ``None`` when unlabelled. Paths are kept as written."""

    image_a: str
    image_b: str
    caption: Optional[str] = None
    caption_key: Optional[str] = None
    reference: Optional[str] = None
    label: Optional[float] = None
    source: Optional[str] = None
    confidence: Optional[float] = None

    @property
    def is_labelled(self) -> bool:
        return self.label is not None

    @property
    def is_human(self) -> bool:
        return self.source == 'human' and self.label is not None

    def to_json(self) -> dict:
        """The JSON object of this pair, without the fields that are ``None``."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _check_unit_interval(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f'"{field}" must be a number in [0, 1], got {value!r}')
    if not 0.0 <= value <= 1.0:
        raise ValueError(f'"{field}" must be in [0, 1], got {value!r}')
    return float(value)


def _check_text(value: Any, field: str, required: bool) -> Optional[str]:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'"{field}" must be a non-empty string, got {value!r}')
    return value


def pair_from_json(obj: Any) -> PreferencePair:
    """Validate one decoded line; raise ``ValueError`` with what is wrong (without the location)."""
    if not isinstance(obj, dict):
        raise ValueError(f'expected a JSON object, got {type(obj).__name__}')
    unknown = sorted(set(obj) - set(PAIR_FIELDS) - set(LOG_FIELDS))
    if unknown:
        raise ValueError(f'unknown field(s) {unknown}; accepted fields: {list(PAIR_FIELDS + LOG_FIELDS)}')
    _check_log_fields(obj)
    pair = PreferencePair(
        image_a=_check_text(obj.get('image_a'), 'image_a', required=True),
        image_b=_check_text(obj.get('image_b'), 'image_b', required=True),
        caption=_check_text(obj.get('caption'), 'caption', required=False),
        caption_key=_check_text(obj.get('caption_key'), 'caption_key', required=False),
        reference=_check_text(obj.get('reference'), 'reference', required=False),
    )
    if pair.caption is not None and pair.caption_key is not None:
        raise ValueError('give "caption" or "caption_key", not both')
    if obj.get('label') is not None:
        pair.label = _check_unit_interval(obj['label'], 'label')
        if obj.get('source') not in LABEL_SOURCES:
            raise ValueError(f'a labelled pair needs "source" in {list(LABEL_SOURCES)}, got {obj.get("source")!r}')
        pair.source = obj['source']
    elif obj.get('source') is not None:
        raise ValueError(f'"source" is {obj["source"]!r} but the pair has no "label"')
    if obj.get('confidence') is not None:
        pair.confidence = _check_unit_interval(obj['confidence'], 'confidence')
    return pair


def _check_log_fields(obj: dict) -> None:
    """The label-log fields of one line (see the module docstring), if it has any."""
    event = obj.get('event')
    if event is None:
        extra = sorted(set(obj) & set(LOG_FIELDS))
        if extra:
            raise ValueError(f'label-log field(s) {extra} need "event" in {list(LOG_EVENTS)}')
        return
    if event not in LOG_EVENTS:
        raise ValueError(f'"event" must be one of {list(LOG_EVENTS)}, got {event!r}')
    _check_text(obj.get('annotator'), 'annotator', required=True)
    if (event == 'label') != (obj.get('label') is not None):
        raise ValueError('a "label" event needs "label"; "skip" and "undo" events carry none')
    if obj.get('shown_left') not in (None, 'image_a', 'image_b'):
        raise ValueError(f'"shown_left" must be "image_a" or "image_b", got {obj["shown_left"]!r}')
    seconds = obj.get('seconds')
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0):
        raise ValueError(f'"seconds" must be a number >= 0, got {seconds!r}')
    _check_text(obj.get('time'), 'time', required=False)


def parse_pair_lines(path: str | os.PathLike) -> Iterator[Tuple[int, Any, Optional[PreferencePair], Optional[str]]]:
    """``(line number, decoded object, pair, error)`` of every line that is not blank or a ``#`` comment; a
    malformed line has ``pair = None`` and the error, so callers choose to raise or to report and go on."""
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith('#'):
                continue
            try:
                obj = json.loads(text)
                yield line_no, obj, pair_from_json(obj), None
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                yield line_no, None, None, str(err)


def read_pairs(path: str | os.PathLike, strict: bool = False,
               report: Optional[Callable[[str], None]] = None) -> List[PreferencePair]:
    """Read and validate a pairs file. Blank lines and lines starting with ``#`` are skipped.

    A malformed line is skipped and named, ``<path>, line <n>: <error> (line skipped)``, through ``report``
    (default: a warning of this module's logger, printed on stderr when logging is not set up) and the rest are
    read; ``strict=True`` raises :class:`PairsFormatError` on the first instead. Malformed lines and not one
    readable line: :class:`PairsFormatError` (there is nothing to go on with).

    A label log (lines with ``event``) yields its labels in effect, one per pair
    (:func:`labels_in_effect`, the replay rule of :mod:`drward.annotate.label_log`); ordinary lines are yielded as
    written.
    """
    report = report or logging.getLogger(__name__).warning
    rows, skipped = [], []
    for line_no, obj, pair, error in parse_pair_lines(path):
        if error is not None:
            message = f'{path}, line {line_no}: {error}'
            if strict:
                raise PairsFormatError(message)
            skipped.append(message)
            report(message + ' (line skipped)')
        else:
            rows.append((line_no, obj, pair))
    if skipped and not rows:
        raise PairsFormatError(f'{path}: no readable line ({len(skipped)} malformed; first: {skipped[0]})')
    if any('event' in obj for _, obj, _ in rows):
        return labels_in_effect(rows)
    return [pair for _, _, pair in rows]


def write_pairs(path: str | os.PathLike, pairs: Iterable[PreferencePair]) -> int:
    """Write ``pairs`` as JSONL (validating each), atomically; return the number of lines written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    count = 0
    with open(tmp, 'w', encoding='utf-8') as f:
        for index, pair in enumerate(pairs):
            obj = pair.to_json()
            try:
                pair_from_json(obj)
            except ValueError as err:
                raise PairsFormatError(f'pair {index} to be written to {path}: {err}') from None
            f.write(json.dumps(obj, ensure_ascii=False) + '\n')
            count += 1
    os.replace(tmp, path)
    return count


def resolve_path(path: Optional[str], base_dir: str | os.PathLike) -> Optional[str]:
    """``path`` made absolute against ``base_dir`` (the pairs file's folder); ``None`` stays ``None``."""
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.normpath(os.path.join(base_dir, expanded))


def pair_caption(pair: PreferencePair, base_dir: str | os.PathLike, fallback: Optional[str]) -> Optional[str]:
    """The pair's caption: ``caption``, else the text of the ``caption_key`` file, else ``fallback``."""
    if pair.caption is not None:
        return pair.caption
    if pair.caption_key is not None:
        caption_file = resolve_path(pair.caption_key, base_dir)
        try:
            with open(caption_file, encoding='utf-8') as f:
                text = f.read().strip()
        except OSError as err:
            raise FileNotFoundError(f'caption file {caption_file} (caption_key of pair '
                                    f'{pair.image_a} / {pair.image_b}) cannot be read: {err.strerror}') from None
        return text or fallback
    return fallback


# ------------------------------------------------------------------------------------------------ label logs
PairKey = Tuple[str, str]


@dataclasses.dataclass
class Decision:
    """One event line of the log (``label``: P(image_a preferred) for label events, else ``None``)."""

    line_no: int
    event: str
    annotator: str
    pair: PreferencePair
    label: Optional[float] = None
    shown_left: Optional[str] = None
    seconds: Optional[float] = None
    time: Optional[str] = None

    @property
    def key(self) -> PairKey:
        return self.pair.image_a, self.pair.image_b


def decision_from_row(line_no: int, obj: dict, pair: PreferencePair) -> Decision:
    """The :class:`Decision` of one validated event line."""
    unlabelled = dataclasses.replace(pair, label=None, source=None, confidence=None)
    return Decision(line_no, obj['event'], obj['annotator'], unlabelled, pair.label, obj.get('shown_left'),
                    obj.get('seconds'), obj.get('time'))


def replay(decisions: Sequence[Decision]) -> Dict[Tuple[str, PairKey], List[Decision]]:
    """Per ``(annotator, pair key)``, the stack of decisions still in effect (undo pops the last one)."""
    stacks: Dict[Tuple[str, PairKey], List[Decision]] = {}
    for decision in decisions:
        stack = stacks.setdefault((decision.annotator, decision.key), [])
        if decision.event == 'undo':
            if stack:
                stack.pop()
        else:
            stack.append(decision)
    return stacks


def current_labels(decisions: Sequence[Decision]) -> Dict[Tuple[str, PairKey], Decision]:
    """The label in effect of each ``(annotator, pair key)`` that has one."""
    return {k: stack[-1] for k, stack in replay(decisions).items() if stack and stack[-1].event == 'label'}


def labels_in_effect(rows: Sequence[Tuple[int, Any, PreferencePair]]) -> List[PreferencePair]:
    """The rows of a label log as labelled pairs, one per pair (see the module docstring); ``rows`` are
    ``(line number, decoded object, pair)`` of valid lines; lines without ``event`` are passed through."""
    plain = [pair for _, obj, pair in rows if 'event' not in obj]
    decisions = [decision_from_row(n, obj, pair) for n, obj, pair in rows if 'event' in obj]
    per_pair: Dict[PairKey, List[Decision]] = {}
    for (_, key), decision in current_labels(decisions).items():
        per_pair.setdefault(key, []).append(decision)
    labelled = []
    for key, group in sorted(per_pair.items(), key=lambda item: min(d.line_no for d in item[1])):
        latest = max(group, key=lambda d: d.line_no)
        label = sum(d.label for d in group) / len(group)
        labelled.append(dataclasses.replace(latest.pair, label=label, source='human', confidence=1.0))
    return plain + labelled
