"""Results tables (Markdown, CSV, console) and side-by-side image grids.

A :class:`ResultsTable` has one row per restorer and one column per metric. A cell holds a number, or a string
beginning with ``n/a`` that says why there is none (``n/a (missing weights/iqa/pyiqa/x.pth)``). With two or more
rows, :meth:`ResultsTable.relative_change` adds the paper's relative change of each row against the first,

    Δ% = 100 · (v_row − v_base) / |v_base|,

and marks whether that is an improvement given the metric's direction (↑ higher is better, ↓ lower is better).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import cv2
import numpy as np

from drward.metrics.catalog import MetricInfo

NA = 'n/a'
Cell = Union[float, str]


def is_number(value: Cell) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def relative_change(value: Cell, base: Cell) -> Optional[float]:
    """``100 · (value − base) / |base|``; None when either is not a number or the base is 0."""
    if not (is_number(value) and is_number(base)) or base == 0:
        return None
    return 100.0 * (float(value) - float(base)) / abs(float(base))


def format_change(change: Optional[float], better: str) -> str:
    """``+1.83 % ✓`` / ``−4.55 % ✓`` / ``+0.40 % ✗``: signed percentage and whether it is an improvement."""
    if change is None:
        return NA
    improved = change > 0 if better == 'higher' else change < 0
    mark = '' if change == 0 else (' ✓' if improved else ' ✗')
    return f'{change:+.2f} %{mark}'.replace('-', '−')


def format_cell(value: Cell, digits: int = 4) -> str:
    return f'{value:.{digits}f}' if is_number(value) else str(value)


@dataclass
class ResultsTable:
    """Metrics of one dataset: ``columns`` (name → :class:`MetricInfo`), ``rows`` (restorer label → cells)."""

    dataset: str
    columns: Dict[str, MetricInfo]
    rows: Dict[str, Dict[str, Cell]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def add_row(self, label: str, cells: Dict[str, Cell]) -> None:
        self.rows[label] = {name: cells.get(name, NA) for name in self.columns}

    def header(self) -> List[str]:
        arrows = {'higher': '↑', 'lower': '↓'}
        return ['method'] + [f'{info.label}{arrows.get(info.better, "")}' for info in self.columns.values()]

    def relative_change(self) -> Dict[str, Dict[str, str]]:
        """For every row after the first: ``Δ%`` per metric against the first row (the baseline)."""
        labels = list(self.rows)
        if len(labels) < 2:
            return {}
        base = self.rows[labels[0]]
        return {f'Δ% {label} vs {labels[0]}': {
            name: format_change(relative_change(self.rows[label][name], base[name]), info.better)
            for name, info in self.columns.items()} for label in labels[1:]}

    def body(self) -> List[List[str]]:
        lines = [[label] + [format_cell(cells[name]) for name in self.columns] for label, cells in self.rows.items()]
        lines += [[label] + [cells[name] for name in self.columns] for label, cells in self.relative_change().items()]
        return lines

    def to_markdown(self) -> str:
        header = self.header()
        lines = [f'### {self.dataset}', '', '| ' + ' | '.join(header) + ' |',
                 '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
        lines += ['| ' + ' | '.join(row) + ' |' for row in self.body()]
        if self.notes:
            lines += [''] + [f'- {note}' for note in self.notes]
        return '\n'.join(lines) + '\n'

    def to_json(self) -> Dict:
        """The table's values at full precision, each column's label and direction, and the notes (what
        ``tools/compare_runs.py`` reads)."""
        return {'dataset': self.dataset, 'notes': list(self.notes),
                'columns': {name: {'label': info.label, 'better': info.better} for name, info in self.columns.items()},
                'rows': {label: {name: cells[name] if is_number(cells[name]) else str(cells[name])
                                 for name in self.columns} for label, cells in self.rows.items()}}

    def write(self, folder: str, stem: Optional[str] = None) -> Dict[str, str]:
        """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` (default stem: ``<dataset>_results``); returns
        the paths."""
        os.makedirs(folder, exist_ok=True)
        stem = stem or f'{self.dataset}_results'
        paths = {ext: os.path.join(folder, f'{stem}.{ext}') for ext in ('md', 'csv', 'json')}
        with open(paths['json'], 'w', encoding='utf-8') as handle:
            json.dump(self.to_json(), handle, indent=1, ensure_ascii=False)
        with open(paths['md'], 'w', encoding='utf-8') as handle:
            handle.write(self.to_markdown())
        with open(paths['csv'], 'w', encoding='utf-8', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(self.header())
            writer.writerows(self.body())
        return paths


def _label_panel(img: np.ndarray, text: str, height: int) -> np.ndarray:
    scale = height / img.shape[0]
    panel = cv2.resize(img, (max(1, int(round(img.shape[1] * scale))), height),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    bar = np.full((max(14, height // 16), panel.shape[1], 3), 255, np.uint8)
    font_scale = bar.shape[0] / 30
    cv2.putText(bar, text, (3, int(bar.shape[0] * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def side_by_side(images: Sequence[np.ndarray], labels: Sequence[str], height: Optional[int] = None) -> np.ndarray:
    """HWC uint8 images (BGR or RGB, unchanged) resized to one height, each under a white caption bar."""
    height = height or max(img.shape[0] for img in images)
    panels = [_label_panel(img if img.ndim == 3 else np.repeat(img[..., None], 3, 2), text, height)
              for img, text in zip(images, labels)]
    return np.concatenate(panels, axis=1)
