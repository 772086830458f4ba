"""Training curves of a ReFL or FRM run: recorded while training, or read back from BasicSR's ``train_*.log``.

One data format, :class:`TrainingCurves`, filled either way:

* in memory by :class:`CurveRecorder` (``ReFLModel`` / ``FRMModel`` call it): the values BasicSR's MessageLogger
  prints (every ``logger.print_freq`` iterations), every validation, and the iterations of ReFL's dynamic FRM
  updates; it draws ``experiments/<name>/training_curves.png`` (and writes the numbers to
  ``training_curves.json``) at each validation and at the end of training;
* from the text log by :func:`read_run_logs` (``python tools/plot_curves.py experiments/<name>``), for finished runs,
  runs of older versions, or someone else's run.

The picture (:func:`draw_curves`, matplotlib's Agg backend) has one panel each for the FRM reward of restored
images vs GT (``reward_restored``, ``reward_gt``: training batches as lines, validation as markers), the FRM's pair
accuracy (``frm_acc`` on training batches, ``pair_acc`` on validation pairs), every loss term ``l_*`` on a log scale,
the reward-hacking monitor's ``hack_*`` values (training and validation, one panel each), and each other validation
metric (PSNR, ``val_loss``, ...); dotted vertical lines mark the FRM updates, red dashed ones a training switch (a
run resumed with changed settings, e.g. the FRM updates switched on: :func:`switch_line`).
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

Series = Dict[int, float]  # iteration -> value

CURVES_FILE = 'training_curves.png'
DATA_FILE = 'training_curves.json'
FRM_UPDATE_KEY = 'frm_updates'  # present in ReFLModel's log exactly at the iterations with an FRM update
ACCURACY_KEYS = ('frm_acc', 'pair_acc')
HACK_PREFIX = 'hack_'


def switch_line(it: int, what: str) -> str:
    """The log line that marks a training switch at iteration ``it`` (read back by :func:`parse_log_lines`)."""
    return f'training switch at iter {it}: {what}'


@dataclass
class TrainingCurves:
    """``train[name][iter]`` (logged training values), ``val['dataset/metric'][iter]`` and the FRM update iterations."""

    title: str = ''
    train: Dict[str, Series] = field(default_factory=dict)
    val: Dict[str, Series] = field(default_factory=dict)
    frm_updates: List[int] = field(default_factory=list)
    switches: List[Tuple[int, str]] = field(default_factory=list)

    def add_switch(self, it: int, what: str) -> None:
        if (int(it), what) not in self.switches:
            self.switches.append((int(it), what))

    def add_train(self, it: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.train.setdefault(name, {})[int(it)] = float(value)
        if FRM_UPDATE_KEY in values and int(it) not in self.frm_updates:
            self.frm_updates.append(int(it))

    def add_val(self, it: int, dataset: str, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.val.setdefault(f'{dataset}/{name}', {})[int(it)] = float(value)

    def until(self, last_iter: int) -> 'TrainingCurves':
        """Only the points at iterations ≤ ``last_iter`` (a resumed run redoes the ones after its checkpoint)."""
        cut = lambda series: {name: {i: v for i, v in s.items() if i <= last_iter} for name, s in series.items()}
        updates = [i for i in self.frm_updates if i <= last_iter]
        return TrainingCurves(self.title, cut(self.train), cut(self.val), updates,
                              [s for s in self.switches if s[0] <= last_iter])

    def to_json(self) -> Dict:
        return {'title': self.title, 'frm_updates': sorted(self.frm_updates),
                'train': {k: sorted(v.items()) for k, v in self.train.items()},
                'val': {k: sorted(v.items()) for k, v in self.val.items()},
                'switches': [[i, what] for i, what in self.switches]}

    @classmethod
    def from_json(cls, data: Mapping) -> 'TrainingCurves':
        as_series = lambda groups: {k: {int(i): float(v) for i, v in pairs} for k, pairs in groups.items()}
        return cls(data.get('title', ''), as_series(data['train']), as_series(data['val']),
                   [int(i) for i in data['frm_updates']],
                   [(int(i), str(what)) for i, what in data.get('switches', [])])


# ----------------------------------------------------------------------------------------------- reading logs
_NUMBER = r'[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)'
_TRAIN_LINE = re.compile(r'\[epoch:\s*\d+, iter:\s*([\d,]+), lr:\([^)]*\)\]\s*(?:\[eta:[^\]]*\]\s*)?(.*)$')
_TRAIN_VALUE = re.compile(rf'(\w+): ({_NUMBER})(?=\s|$)')
_VAL_LINE = re.compile(r'Validation (\S+?),? (?:@ )?iter ([\d,]+): (.*)$')
_VAL_VALUE = re.compile(rf'^\s*(\w+):? ({_NUMBER})\b')
_SWITCH_LINE = re.compile(r'training switch at iter ([\d,]+): (.*)$')


def parse_log_lines(lines, curves: Optional[TrainingCurves] = None) -> TrainingCurves:
    """Add to ``curves`` the MessageLogger lines of ``lines`` (``[epoch: …, iter: …, lr:(…)] [eta: …] key: value …``)
    and the validation lines (ReFL: ``Validation <set>, iter N: psnr: …, reward_restored: …``; FRM:
    ``Validation <set> @ iter N: pair_acc … (best …), val_loss … on P pairs``)."""
    curves = curves if curves is not None else TrainingCurves()
    for line in lines:
        match = _TRAIN_LINE.search(line)
        if match:
            values = {k: float(v) for k, v in _TRAIN_VALUE.findall(match.group(2))}
            curves.add_train(int(match.group(1).replace(',', '')), values)
            continue
        match = _SWITCH_LINE.search(line.rstrip())
        if match:
            curves.add_switch(int(match.group(1).replace(',', '')), match.group(2))
            continue
        match = _VAL_LINE.search(line)
        if match:
            text = re.sub(r'\([^)]*\)', '', match.group(3))  # drop "(best … @ iter …)"
            values = dict(m.groups() for m in map(_VAL_VALUE.match, text.split(',')) if m)
            curves.add_val(int(match.group(2).replace(',', '')), match.group(1),
                           {k: float(v) for k, v in values.items()})
    return curves


def run_logs(run_dir: str) -> List[str]:
    """The run's ``train_*.log`` files, oldest first (BasicSR names them with a timestamp)."""
    return sorted(glob.glob(osp.join(run_dir, 'train_*.log')))


def read_run_logs(run_dir: str) -> TrainingCurves:
    """The curves of a run from all its ``train_*.log`` files (a resumed run's later log overrides the earlier one
    where they overlap); :class:`FileNotFoundError` names the folder when it holds no log."""
    paths = [run_dir] if osp.isfile(run_dir) else run_logs(run_dir)
    if not paths:
        raise FileNotFoundError(f'no train_*.log in {run_dir} (BasicSR writes one per run into the experiment folder)')
    curves = TrainingCurves(title=osp.basename(osp.normpath(osp.dirname(paths[0]) if osp.isfile(run_dir) else run_dir)))
    for path in paths:
        with open(path, encoding='utf-8', errors='replace') as handle:
            parse_log_lines(handle, curves)
    return curves


# ----------------------------------------------------------------------------------------------- drawing
def _panels(curves: TrainingCurves) -> List[Tuple[str, bool, Dict[str, Series], Dict[str, Series]]]:
    """``(title, log scale, training series, validation series)`` for every panel that has data."""
    val_metric = lambda name: name.rsplit('/', 1)[-1]
    pick = lambda group, test: {k: v for k, v in group.items() if v and test(k)}
    panels = [
        ('FRM reward (cosine): restored vs GT', False, pick(curves.train, lambda k: k.startswith('reward_')),
         pick(curves.val, lambda k: val_metric(k).startswith('reward_'))),
        ('FRM pair accuracy', False, pick(curves.train, lambda k: k in ACCURACY_KEYS),
         pick(curves.val, lambda k: val_metric(k) in ACCURACY_KEYS)),
        ('loss terms (log scale)', True, pick(curves.train, lambda k: k.startswith('l_')), {}),
    ]
    hack_keys = sorted({k for k in curves.train if k.startswith(HACK_PREFIX)}
                       | {val_metric(k) for k in curves.val if val_metric(k).startswith(HACK_PREFIX)})
    panels += [(f'reward-hacking monitor: {key}', False, pick(curves.train, lambda k, key=key: k == key),
                pick(curves.val, lambda k, key=key: val_metric(k) == key)) for key in hack_keys]
    shown = {k for _, _, _, val in panels for k in val}
    for metric in sorted({val_metric(k) for k in curves.val if k not in shown}):
        panels.append((f'validation: {metric}', False, {}, pick(curves.val, lambda k: val_metric(k) == metric)))
    return [panel for panel in panels if panel[2] or panel[3]]


def draw_curves(curves: TrainingCurves, path: str) -> str:
    """Draw the panels of ``curves`` into the PNG ``path`` (written atomically); returns ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = _panels(curves) or [('no logged values yet', False, {}, {})]
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, log_scale, train, val) in zip(axes.flat, panels):
        names = list(dict.fromkeys(list(train) + [name.rsplit('/', 1)[-1] for name in val]))
        colour = {name: f'C{i % 10}' for i, name in enumerate(names)}  # a metric keeps its colour in val
        for name, series in train.items():
            points = sorted((i, v) for i, v in series.items() if not log_scale or v > 0)
            if points:
                ax.plot(*zip(*points), label=name, linewidth=1.2, color=colour[name])
        for name, series in val.items():
            dataset, metric = name.rsplit('/', 1)
            ax.plot(*zip(*sorted(series.items())), marker='o', linestyle='--', color=colour[metric],
                    label=f'{metric} (validation, {dataset})')
        for it in curves.frm_updates:
            ax.axvline(it, color='grey', linestyle=':', linewidth=0.8, alpha=0.6)
        for it, _ in curves.switches:
            ax.axvline(it, color='red', linestyle='--', linewidth=1.4)
        ax.set_yscale('log' if log_scale else 'linear')
        if not log_scale:
            ax.ticklabel_format(axis='y', useOffset=False)  # PSNR 10.9573, not +1.095e1 and 0.0073
        ax.set_title(title, fontsize=10)
        ax.set_xlabel('iteration', fontsize=8)
        ax.tick_params(labelsize=8)
        if train or val:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    marks = f' — dotted lines: {len(curves.frm_updates)} FRM updates' if curves.frm_updates else ''
    marks += ''.join(f'\nred dashed line, iter {it}: {what}' for it, what in curves.switches)
    fig.suptitle(f'{curves.title}{marks}', fontsize=11)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp.png'
    fig.savefig(tmp, dpi=72)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------- recording
class CurveRecorder:
    """What ReFLModel / FRMModel hold: records the logged values and validations, draws at validation and at the end.

    Inert (records, never draws) when the options name no ``path.experiments_root`` or the model is not training.
    On resume, it starts from the run's earlier logs up to the resumed iteration. Drawing never stops training: a
    failure is logged as one warning line.
    """

    def __init__(self, opt: Mapping) -> None:
        path_opt = opt.get('path') or {}
        root = path_opt.get('experiments_root')
        self.path = osp.join(root, CURVES_FILE) if root and opt.get('is_train', True) else None
        self.print_freq = int((opt.get('logger') or {}).get('print_freq') or 1)
        self.curves = TrainingCurves(title=str(opt.get('name', '')))
        resume = path_opt.get('resume_state')
        stem = osp.splitext(osp.basename(resume or ''))[0]
        if self.path and stem.isdigit() and run_logs(root):  # BasicSR's <iter>.state
            self.curves = read_run_logs(root).until(int(stem))
            self.curves.title = str(opt.get('name', ''))

    def train(self, it: int, log: Mapping[str, float]) -> None:
        """The log of iteration ``it``: kept where BasicSR prints it; an FRM update is marked at any iteration."""
        if it % self.print_freq == 0:
            self.curves.add_train(it, log)
        elif FRM_UPDATE_KEY in log and it not in self.curves.frm_updates:
            self.curves.frm_updates.append(it)

    def switch(self, it: int, what: str) -> None:
        """Mark a training switch at ``it`` (drawn as a red dashed line; the caller logs :func:`switch_line`)."""
        self.curves.add_switch(it, what)

    def validation(self, it: int, dataset: str, results: Mapping[str, float]) -> None:
        self.curves.add_val(it, dataset, results)
        self.draw()

    def draw(self) -> Optional[str]:
        """Write ``training_curves.png`` and ``training_curves.json``; returns the PNG path (None when inert)."""
        if not self.path:
            return None
        try:
            with open(osp.join(osp.dirname(self.path), DATA_FILE), 'w', encoding='utf-8') as handle:
                json.dump(self.curves.to_json(), handle)
            return draw_curves(self.curves, self.path)
        except Exception as error:  # noqa: BLE001  (a picture must never stop a training run)
            from basicsr.utils import get_root_logger
            get_root_logger().warning(f'training curves not written to {self.path}: {type(error).__name__}: {error}')
            return None
