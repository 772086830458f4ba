"""What each browser tab of the labelling page has been told: its annotator name and the outcome of its clicks.

The page keeps this on the server, keyed by Gradio's session hash (one per tab), not in ``gr.State``: a state value
is sent with the event, so two events sent before the first answer would each start from the same old value and
one update would be lost. Every click ends in exactly one of two outcomes, counted here and shown on the page:

* **recorded** — a line was appended to the label log and fsynced before the page was answered;
* **not recorded** — nothing was written, and the page says why (no name, a stale pair, a failed write, nothing
  to undo).

So for each tab, ``recorded`` equals the number of log lines it caused, and ``recorded + not recorded`` equals the
clicks the server received from it.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Deque, Dict

RECENT = 4      # outcomes listed on the page, newest first
MAX_TABS = 10000  # oldest tabs are forgotten beyond this (their counts only; the log is untouched)


@dataclasses.dataclass
class TabRecord:
    """One tab: the name it last showed a pair for, its counts and its latest outcomes."""

    name: str = ''
    recorded: int = 0
    not_recorded: int = 0
    recent: Deque[str] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=RECENT))

    def tally(self) -> str:
        """The tab's counts and latest outcomes as Markdown (the page's ``#tally``)."""
        lines = [f'This tab: **{self.recorded} recorded** · {self.not_recorded} not recorded']
        return '\n\n'.join(lines + [f'- {line}' for line in self.recent])


class TabLedger:
    """Every tab's :class:`TabRecord`, behind a lock (the page's handlers run in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tabs: 'collections.OrderedDict[str, TabRecord]' = collections.OrderedDict()

    def tab(self, session: str) -> TabRecord:
        with self._lock:
            record = self._tabs.pop(session, None) or TabRecord()
            self._tabs[session] = record
            while len(self._tabs) > MAX_TABS:
                self._tabs.popitem(last=False)
            return record

    def note(self, session: str, recorded: bool, line: str) -> TabRecord:
        """Count one click's outcome and keep its line (shown newest first)."""
        record = self.tab(session)
        with self._lock:
            if recorded:
                record.recorded += 1
            else:
                record.not_recorded += 1
            record.recent.appendleft(line)
        return record

    def counts(self) -> Dict[str, tuple]:
        """``{session: (name, recorded, not recorded)}`` (for tests and the load benchmark)."""
        with self._lock:
            return {s: (r.name, r.recorded, r.not_recorded) for s, r in self._tabs.items()}
