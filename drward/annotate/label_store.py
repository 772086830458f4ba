"""Who labels which pair next, and every decision appended to the label log (:mod:`drward.annotate.label_log`).

:class:`LabelStore` holds the task's pairs (absolute paths) and the log's state, behind one lock (the page's
handlers run in threads):

* **Resume**: the log is replayed at start; an annotator is next shown the first pair (in the chosen order) on
  which they have no decision in effect. Malformed log lines are listed in :attr:`LabelStore.malformed` (line
  number and error) and left in the file.
* **Assignment**: a pair outside the overlap goes to one annotator: it is offered only while nobody has a label
  in effect on it and no other annotator has it on screen; a pair in the overlap (a seeded ``overlap`` fraction of
  the pairs, the same at every launch) is offered to every annotator, for agreement (Cohen's κ).
* **Orders**: ``file`` (as in the pairs file), ``random`` (a seeded permutation) or ``uncertainty`` (a ranker's
  order, e.g. :class:`drward.annotate.active.UncertaintyRanker`: least sure SVM first).
* **Decisions**: ``label`` (A / B / tie → P(image_a preferred) = 1 / 0 / ½ from the side chosen and
  ``shown_left``), ``skip`` (never a label; the annotator is not offered the pair again) and ``undo`` (cancels
  the annotator's last decision in effect and shows that pair again).
* **One decision per pair seen**: :meth:`LabelStore.decide` and :meth:`LabelStore.undo` take the index of the
  pair the click was made on (``expected``) and raise :class:`StaleClick` if it is not the annotator's current
  pair, checked under the same lock as the write, so two clicks racing on one pair record one decision. The line
  is appended and fsynced (:func:`~drward.annotate.label_log.append_record`) before the state moves on; a write
  that fails raises ``OSError`` and leaves the state (and the pair on screen) as it was.
"""
from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from drward.annotate.collect import absolute_pairs, relative_pairs
from drward.annotate.label_log import append_record, decision_record, read_label_log
from drward.data.pairs_file import PreferencePair
from drward.utils.options import OptionError

ORDERS = ('random', 'uncertainty', 'file')
NO_PAIR = -1  # the ``expected`` index of a click made while no pair was shown (nothing left)


class StaleClick(Exception):
    """A click made on a pair that is no longer the annotator's current pair (a double click, another tab)."""

    def __init__(self, expected: int, current: Optional['Shown']) -> None:
        now = 'no pair' if current is None else f'pair #{current.index}'
        super().__init__(f'that click was for pair #{expected}, no longer on screen (now {now})')
        self.expected, self.current = expected, current


@dataclasses.dataclass
class Shown:
    """The pair an annotator has on screen: its index, the pair (absolute paths) and which side is left."""

    index: int
    pair: PreferencePair
    shown_left: str  # 'image_a' or 'image_b'
    since: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def left(self) -> str:
        return self.pair.image_a if self.shown_left == 'image_a' else self.pair.image_b

    @property
    def right(self) -> str:
        return self.pair.image_b if self.shown_left == 'image_a' else self.pair.image_a


def label_of_choice(choice: str, shown_left: str) -> float:
    """P(image_a preferred) of choosing ``left`` / ``right`` / ``tie`` when ``shown_left`` was on the left."""
    if choice == 'tie':
        return 0.5
    if choice not in ('left', 'right'):
        raise ValueError(f'choice must be left, right or tie, got {choice!r}')
    return float((choice == 'left') == (shown_left == 'image_a'))


def overlap_indices(n_pairs: int, fraction: float, seed: int = 0) -> frozenset:
    """The seeded ``round(fraction · n)`` pairs every annotator labels (independent of the order)."""
    if not 0.0 <= fraction <= 1.0:
        raise OptionError(f'overlap must be in [0, 1], got {fraction}')
    permutation = np.random.default_rng((seed, 0x0F)).permutation(n_pairs)  # not the orders' permutations
    return frozenset(int(i) for i in permutation[:int(round(fraction * n_pairs))])


class LabelStore:
    """The task's pairs, the label log at ``out_path`` and the assignment rules (see the module docstring)."""

    def __init__(self, pairs: Sequence[PreferencePair], out_path: str, order: str = 'random', overlap: float = 0.0,
                 seed: int = 0, ranker: Optional[Callable[[], Sequence[int]]] = None,
                 on_label: Optional[Callable[['LabelStore'], None]] = None) -> None:
        if order not in ORDERS:
            raise OptionError(f'order must be one of {ORDERS}, got {order!r}')
        if order == 'uncertainty' and ranker is None:
            raise OptionError('order "uncertainty" needs a ranker (drward.annotate.active.UncertaintyRanker)')
        if not pairs:
            raise OptionError('no pairs to label')
        self.out_path = os.path.abspath(out_path)
        self.base_dir = os.path.dirname(self.out_path)
        os.makedirs(self.base_dir, exist_ok=True)
        self.pairs = [dataclasses.replace(p, label=None, source=None, confidence=None) for p in pairs]
        self._written = relative_pairs(self.pairs, self.base_dir)
        self._index = {(p.image_a, p.image_b): i for i, p in enumerate(self.pairs)}
        self.overlap = overlap_indices(len(self.pairs), overlap, seed)
        self._fixed_order = list(range(len(self.pairs)))
        if order == 'random':
            random.Random(seed).shuffle(self._fixed_order)
        self._ranker = ranker if order == 'uncertainty' else None
        self._on_label = on_label
        self._sides = random.Random(seed + 1)
        self._lock = threading.RLock()
        self._stacks: Dict[Tuple[str, int], List[Tuple[str, Optional[float]]]] = {}
        self._history: Dict[str, List[int]] = {}
        self._shown: Dict[str, Shown] = {}
        self.unknown_pairs = 0  # log lines naming a pair that is not in the task
        decisions, self.malformed = read_label_log(self.out_path)
        for decision in decisions:
            pair = absolute_pairs([decision.pair], self.base_dir)[0]
            index = self._index.get((pair.image_a, pair.image_b))
            if index is None:
                self.unknown_pairs += 1
            else:
                self._apply(decision.annotator, index, decision.event, decision.label)

    # -- state ---------------------------------------------------------------------------------------------
    def _apply(self, annotator: str, index: int, event: str, label: Optional[float]) -> None:
        stack = self._stacks.setdefault((annotator, index), [])
        history = self._history.setdefault(annotator, [])
        if event == 'undo':
            if stack:
                stack.pop()
                if index in history:
                    del history[len(history) - 1 - history[::-1].index(index)]
        else:
            stack.append((event, label))
            history.append(index)

    def _top(self, annotator: str, index: int) -> Optional[Tuple[str, Optional[float]]]:
        stack = self._stacks.get((annotator, index))
        return stack[-1] if stack else None

    def labels(self) -> Dict[Tuple[str, int], float]:
        """The labels in effect, ``{(annotator, pair index): P(image_a preferred)}``."""
        with self._lock:
            return {key: stack[-1][1] for key, stack in self._stacks.items() if stack and stack[-1][0] == 'label'}

    def labelled_indices(self) -> set:
        """Indices of the pairs with at least one label in effect."""
        return {index for _, index in self.labels()}

    def progress(self, annotator: str) -> Tuple[int, int, int]:
        """``(labels in effect by annotator, pairs labelled by anyone, number of pairs)``."""
        labels = self.labels()
        return (sum(a == annotator for a, _ in labels), len({i for _, i in labels}), len(self.pairs))

    # -- assignment ----------------------------------------------------------------------------------------
    def _eligible(self, annotator: str, index: int, labelled: set) -> bool:
        if self._top(annotator, index) is not None:
            return False
        if index in self.overlap:
            return True
        busy = any(s.index == index for who, s in self._shown.items() if who != annotator)
        return index not in labelled and not busy

    def _order(self) -> Sequence[int]:
        return self._ranker() if self._ranker is not None else self._fixed_order

    def current(self, annotator: str) -> Optional[Shown]:
        """The pair ``annotator`` has on screen, choosing the next one if none (``None``: nothing left)."""
        with self._lock:
            if annotator in self._shown:
                return self._shown[annotator]
            labelled = self.labelled_indices()
            index = next((i for i in self._order() if self._eligible(annotator, i, labelled)), None)
            return None if index is None else self._show(annotator, index)

    def _show(self, annotator: str, index: int) -> Shown:
        side = 'image_a' if self._sides.random() < 0.5 else 'image_b'
        self._shown[annotator] = Shown(index, self.pairs[index], side)
        return self._shown[annotator]

    def release(self, annotator: str) -> None:
        """Forget what ``annotator`` has on screen (e.g. they changed their name), so others may get it."""
        with self._lock:
            self._shown.pop(annotator, None)

    # -- decisions -----------------------------------------------------------------------------------------
    def _check(self, annotator: str, expected: Optional[int]) -> Optional[Shown]:
        """The annotator's current pair; :class:`StaleClick` if ``expected`` is given and is not its index."""
        shown = self.current(annotator)
        if expected is not None and (NO_PAIR if shown is None else shown.index) != expected:
            raise StaleClick(expected, shown)
        return shown

    def decide(self, annotator: str, choice: str, expected: Optional[int] = None) -> Optional[Shown]:
        """Record ``choice`` (``left``, ``right``, ``tie`` or ``skip``) on the shown pair (appended and fsynced
        first); return the next pair. ``expected``: the pair index the click was made on (see the docstring)."""
        with self._lock:
            shown = self._check(annotator, expected)
            if shown is None:
                return None
            event = 'skip' if choice == 'skip' else 'label'
            label = None if event == 'skip' else label_of_choice(choice, shown.shown_left)
            append_record(self.out_path, decision_record(
                self._written[shown.index], event, annotator, label, shown.shown_left,
                time.monotonic() - shown.since))
            self._apply(annotator, shown.index, event, label)
            del self._shown[annotator]
        if event == 'label' and self._on_label is not None:
            self._on_label(self)
        return self.current(annotator)

    def undone_index(self, annotator: str) -> Optional[int]:
        """The pair :meth:`undo` would show again (``None``: nothing to undo)."""
        with self._lock:
            history = self._history.get(annotator, [])
            return history[-1] if history else None

    def undo(self, annotator: str, expected: Optional[int] = None) -> Optional[Shown]:
        """Cancel ``annotator``'s last decision in effect (an ``undo`` line, fsynced) and show that pair again,
        unless another annotator took it meanwhile (a skipped pair is free for others): then the next pair.
        Nothing to undo: the current pair. ``expected`` as in :meth:`decide`."""
        return self.undo_returning(annotator, expected)[1]

    def undo_returning(self, annotator: str, expected: Optional[int] = None) -> Tuple[Optional[int], Optional[Shown]]:
        """:meth:`undo`, also returning the index of the pair undone (``None``: nothing to undo), in one step."""
        with self._lock:
            self._check(annotator, expected)
            index = self.undone_index(annotator)
            if index is None:
                return None, self.current(annotator)
            append_record(self.out_path, decision_record(self._written[index], 'undo', annotator))
            self._apply(annotator, index, 'undo', None)
            self._shown.pop(annotator, None)
            if self._eligible(annotator, index, self.labelled_indices()):
                return index, self._show(annotator, index)
            return index, self.current(annotator)  # an undone skip's pair went to another annotator meanwhile
