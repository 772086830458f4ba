"""The annotators of ``benchmarks/label_load.py``: a seeded plan of clicks, an HTTP driver (gradio_client) and a
browser driver (Playwright), each keeping what the page acknowledged.

Every action ends in one of three ways: **recorded** (the page answered "Recorded": the line is on disk),
**not recorded** (the page answered why: a stale pair, nothing to undo) or **failed** (no answer: the server was
killed while the request was in flight; the line may or may not have been written).
"""
from __future__ import annotations

import dataclasses
import random
import re
import threading
import time
from typing import Callable, List, Optional, Tuple

OUTPUTS = ('progress', 'caption', 'left', 'right', 'slider', 'reference', 'token', 'status', 'outcome', 'tally')
BUTTON_NAMES = {'left': 'A is better', 'right': 'B is better', 'tie': 'Tie', 'skip': 'Skip', 'undo': 'Undo'}
ANSWER_S = 90.0  # a click with no answer after this long counts as failed (in flight)
EVENT_OF = {'left': 'label', 'right': 'label', 'tie': 'label', 'skip': 'skip', 'undo': 'undo'}


def plan_actions(pairs: int, seed: int, undo_rate: float = 0.15, skip_rate: float = 0.15) -> List[str]:
    """``pairs`` decisions (A / B / tie, or skip), each followed by an undo with probability ``undo_rate`` (the
    undone pair is then decided again, so ``pairs`` distinct pairs are decided in all)."""
    rng = random.Random(seed)
    plan = []
    for _ in range(pairs):
        plan.append('skip' if rng.random() < skip_rate else rng.choice(('left', 'right', 'tie')))
        if rng.random() < undo_rate:
            plan += ['undo', rng.choice(('left', 'right', 'tie'))]
    return plan


@dataclasses.dataclass
class Annotator:
    """One annotator's plan and what happened: acknowledged ``(pair index, action)``, latencies."""

    name: str
    plan: List[str]
    recorded: List[Tuple[int, str]] = dataclasses.field(default_factory=list)
    not_recorded: List[str] = dataclasses.field(default_factory=list)
    failed: List[Tuple[int, str]] = dataclasses.field(default_factory=list)
    latencies: List[float] = dataclasses.field(default_factory=list)
    recorded_after_restart: int = 0
    left_at_kill: Optional[int] = None  # actions not yet answered when the server was killed
    error: Optional[str] = None

    def left(self) -> int:
        """Planned actions not yet answered (recorded, not recorded or failed)."""
        return len(self.plan) - len(self.recorded) - len(self.not_recorded) - len(self.failed)

    def answered(self, token: int, action: str, shown: int, outcome: str, seconds: float, generation: int) -> None:
        """Book one answer: ``token`` the pair clicked on, ``shown`` the pair now on screen."""
        self.latencies.append(seconds)
        if not outcome.startswith('✓ Recorded'):
            self.not_recorded.append(outcome)
            return
        pair = int(re.search(r'Undo of pair #(\d+)', outcome).group(1)) if action == 'undo' else token
        self.recorded.append((pair, action))  # an undo's line names the pair it undid
        self.recorded_after_restart += generation > 0


class ServerWatch:
    """The server's generation (bumped at each relaunch) and an event set while it is up."""

    def __init__(self) -> None:
        self.generation = 0
        self.up = threading.Event()

    def wait_up(self, timeout_s: float = 120.0) -> int:
        if not self.up.wait(timeout_s):
            raise TimeoutError(f'the labelling server was not back within {timeout_s:.0f} s')
        return self.generation


def token_of(status: str) -> int:
    """The pair on screen from the page's status (``pair #N``), -1 when none is left."""
    found = re.search(r'pair #(\d+)', status or '')
    return int(found.group(1)) if found else -1


def connect(name: str, url: str, watch: ServerWatch, timeout_s: float = 180.0) -> tuple:
    """``(gradio_client Client, pair shown, server generation)`` for annotator ``name``: a new session, retried
    while the server is (re)starting or too busy to answer. An attempt during which the server was killed is
    retried too: it may have been answered by either server, and the answers that follow must be booked under
    the generation that gave them (else an annotator first connecting across the kill counts as never resumed)."""
    from gradio_client import Client
    deadline = time.monotonic() + timeout_s
    while True:
        generation = watch.wait_up(max(1.0, deadline - time.monotonic()))
        try:
            client = Client(url, download_files=False, verbose=False, httpx_kwargs={'timeout': ANSWER_S})
            token = token_of(client.submit(name, api_name='/show').result(timeout=ANSWER_S)[OUTPUTS.index('status')])
            if watch.generation == generation:
                return client, token, generation
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def run_http(annotator: Annotator, url: str, watch: ServerWatch, on_ack: Callable[[Annotator], None]) -> None:
    """Drive one annotator through gradio_client (its own session); reconnect after a server restart."""
    try:
        client, token, generation = connect(annotator.name, url, watch)
        for action in annotator.plan:
            started = time.monotonic()
            try:
                out = client.submit(annotator.name, str(token), api_name='/' + action).result(timeout=ANSWER_S)
            except Exception:  # the server went away with this request in flight (or never answered)
                annotator.failed.append((token, action))
                while watch.generation == generation and time.monotonic() - started < ANSWER_S:
                    time.sleep(0.2)
                client, token, generation = connect(annotator.name, url, watch)
                continue
            shown = token_of(out[OUTPUTS.index('status')])
            annotator.answered(token, action, shown, out[OUTPUTS.index('outcome')], time.monotonic() - started,
                               generation)
            token = shown
            on_ack(annotator)
    except Exception as err:  # reported in the table, fails the checks
        annotator.error = f'{type(err).__name__}: {err}'


class BrowserAnnotator:
    """One browser context: clicks its plan's buttons one by one, reading each answer off the page."""

    def __init__(self, browser, url: str, annotator: Annotator) -> None:
        self.context, self.url, self.annotator = browser.new_context(), url, annotator
        self.page, self.step, self.pending = None, 0, None
        self.generation = -1

    def open(self, generation: int) -> None:
        if self.page is not None:
            self.page.close()
        self.page = self.context.new_page()
        self.page.goto(f'{self.url}?annotator={self.annotator.name}')
        self.page.wait_for_function("() => /pair #|No pair left/.test(document.querySelector('#status')?.innerText)",
                                    timeout=60000)
        self.generation = generation

    def answers(self) -> int:
        found = re.search(r'This tab: (\d+) recorded · (\d+) not recorded', self.page.inner_text('#tally'))
        return int(found.group(1)) + int(found.group(2)) if found else 0

    @property
    def done(self) -> bool:
        return self.step >= len(self.annotator.plan) and self.pending is None

    def poll(self, watch: ServerWatch, on_ack: Callable[[Annotator], None]) -> None:
        """One move: click the next action if none is pending, else book its answer if it came."""
        if self.done:
            return
        try:
            if self.generation != watch.generation:
                if not watch.up.is_set():
                    return
                self.open(watch.generation)
                return
            if self.pending is None:
                action = self.annotator.plan[self.step]
                token, answers = token_of(self.page.inner_text('#status')), self.answers()
                self.page.get_by_role('button', name=BUTTON_NAMES[action], exact=True).click()
                self.pending = (token, action, answers, time.monotonic(), self.generation)
                return
            token, action, answers, started, generation = self.pending
            if generation != watch.generation or time.monotonic() - started > ANSWER_S:  # killed, or no answer
                self.annotator.failed.append((token, action))
                self.generation = -1  # reopen the page
            elif self.answers() > answers:
                outcome = self.page.inner_text('#outcome')
                self.annotator.answered(token, action, token_of(self.page.inner_text('#status')), outcome,
                                        time.monotonic() - started, generation)
                on_ack(self.annotator)
            else:
                return
            self.pending, self.step = None, self.step + 1
        except Exception as err:
            if watch.up.is_set() and self.generation == watch.generation:
                self.annotator.error = f'{type(err).__name__}: {err}'
                self.step, self.pending = len(self.annotator.plan), None

    def close(self) -> None:
        self.context.close()
