"""One comparison table from several ``tools/test.py`` result folders (``tools/compare_runs.py``).

``tools/test.py`` writes ``<dataset>_results.json`` (and ``.md`` / ``.csv``) into each run's results folder
(:meth:`~drward.metrics.report.ResultsTable.write`). This module reads them back (the CSV when a folder written by an
older version has no JSON), lines up every method's row per dataset, and builds the paper's table:

* one row per method (its ``val.label`` when the folders' labels differ, else the folder's name; ``folder/label``
  for a folder holding a compare-mode table of two rows);
* one column per metric, its direction in the header (↑ higher is better, ↓ lower is better);
* each cell the value and its relative change against the baseline row, ``Δ% = 100·(v − v_base)/|v_base|``
  (:func:`~drward.metrics.report.relative_change`; the paper: LMD −4.55 %, MUSIQ +1.83 %, Aesthetic +1.80 %);
* the best value of each column in bold (Markdown); a missing metric reads ``n/a (<reason>)``, the reason the test
  tool recorded (``n/a (missing weights/iqa/…)``), or ``n/a (not measured)`` when the run had no such column.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from drward.metrics.report import NA, Cell, format_cell, format_change, is_number, relative_change

RESULTS_SUFFIX = '_results'
NOT_MEASURED = f'{NA} (not measured)'
_ARROWS = {'↑': 'higher', '↓': 'lower'}


@dataclass
class RunTable:
    """One dataset's table from one folder: ``columns`` (label → ``'higher'``/``'lower'``), ``rows`` (method →
    label → cell)."""

    dataset: str
    columns: Dict[str, str] = field(default_factory=dict)
    rows: Dict[str, Dict[str, Cell]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def _from_json(path: str) -> RunTable:
    with open(path, encoding='utf-8') as handle:
        data = json.load(handle)
    table = RunTable(data['dataset'], notes=list(data.get('notes') or []))
    labels = {name: col['label'] for name, col in data['columns'].items()}
    table.columns = {col['label']: col['better'] for col in data['columns'].values()}
    table.rows = {method: {labels[name]: value for name, value in cells.items()}
                  for method, cells in data['rows'].items()}
    return table


def _number_or_text(text: str) -> Cell:
    try:
        return float(text)
    except ValueError:
        return text


def _from_csv(path: str, dataset: str) -> RunTable:
    """The CSV :meth:`ResultsTable.write` writes: header ``method, LMD↓, MUSIQ↑, …``, then one row per method and
    the ``Δ% …`` rows (skipped: recomputed here). Values carry 4 decimals."""
    with open(path, encoding='utf-8', newline='') as handle:
        rows = list(csv.reader(handle))
    table = RunTable(dataset)
    header = rows[0][1:]
    for title in header:
        arrow = title[-1] if title[-1:] in _ARROWS else ''
        table.columns[title[:-1] if arrow else title] = _ARROWS.get(arrow, 'higher')
    labels = list(table.columns)
    for row in rows[1:]:
        if row and not row[0].startswith('Δ%'):
            table.rows[row[0]] = {label: _number_or_text(cell) for label, cell in zip(labels, row[1:])}
    return table


def read_results(folder: str) -> Dict[str, RunTable]:
    """Every dataset table ``tools/test.py`` wrote into ``folder`` (its ``results/<name>/``), by dataset name."""
    tables: Dict[str, RunTable] = {}
    for path in sorted(glob.glob(osp.join(folder, f'*{RESULTS_SUFFIX}.json'))):
        table = _from_json(path)
        tables[table.dataset] = table
    for path in sorted(glob.glob(osp.join(folder, f'*{RESULTS_SUFFIX}.csv'))):
        dataset = osp.basename(path)[:-len(f'{RESULTS_SUFFIX}.csv')]
        if dataset not in tables:
            tables[dataset] = _from_csv(path, dataset)
    if not tables:
        raise FileNotFoundError(f'{folder}: no *{RESULTS_SUFFIX}.json or .csv (the files tools/test.py writes into '
                                'results/<name>/)')
    return tables


@dataclass
class Comparison:
    """The comparison of one dataset: methods in order (the baseline first), columns, cells and notes."""

    dataset: str
    baseline: str
    columns: Dict[str, str]
    rows: Dict[str, Dict[str, Cell]]
    notes: List[str] = field(default_factory=list)

    def best(self, label: str) -> Optional[float]:
        values = [float(cells[label]) for cells in self.rows.values() if is_number(cells[label])]
        if not values:
            return None
        return max(values) if self.columns[label] == 'higher' else min(values)

    def change(self, method: str, label: str) -> Optional[float]:
        return relative_change(self.rows[method][label], self.rows[self.baseline][label])

    def header(self) -> List[str]:
        arrow = {'higher': '↑', 'lower': '↓'}
        return ['method'] + [f'{label}{arrow.get(better, "")}' for label, better in self.columns.items()]

    def markdown_cell(self, method: str, label: str) -> str:
        value = self.rows[method][label]
        text = format_cell(value)
        if is_number(value) and float(value) == self.best(label):
            text = f'**{text}**'
        if method != self.baseline and is_number(value):
            text += f' ({format_change(self.change(method, label), self.columns[label])})'
        return text

    def to_markdown(self, title_note: str = '') -> str:
        header = self.header()
        lines = [f'### {self.dataset}' + (f' — {title_note}' if title_note else ''), '',
                 f'Relative change against **{self.baseline}**; best value of each column in bold; ✓ = better.', '',
                 '| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
        lines += ['| ' + ' | '.join([method] + [self.markdown_cell(method, label) for label in self.columns]) + ' |'
                  for method in self.rows]
        if self.notes:
            lines += [''] + [f'- {note}' for note in self.notes]
        return '\n'.join(lines) + '\n'

    def csv_rows(self) -> List[List[str]]:
        """``dataset, method, <metric>, <metric> Δ% …`` per method: plain values (full precision), no markup."""
        header = ['dataset', 'method'] + [h for col in self.header()[1:]
                                          for h in (col, f'{col} Δ% vs {self.baseline}')]
        rows = [header]
        for method, cells in self.rows.items():
            row = [self.dataset, method]
            for label in self.columns:
                change = self.change(method, label)
                row += [repr(float(cells[label])) if is_number(cells[label]) else str(cells[label]),
                        '' if change is None else f'{change:+.4f}']
            rows.append(row)
        return rows


def _method_names(folders: Sequence[str], tables: Sequence[Dict[str, RunTable]]) -> List[Dict[str, str]]:
    """Row label in each folder → method name: the row labels themselves when every folder holds one row and the
    labels differ (``val.label`` in each test option file); else the folder's name, or ``folder/label`` for a
    folder with a two-row table."""
    labels = [list(dict.fromkeys(label for table in by_dataset.values() for label in table.rows))
              for by_dataset in tables]
    if all(len(group) == 1 for group in labels) and len({group[0] for group in labels}) == len(labels):
        return [{group[0]: group[0]} for group in labels]
    names = []
    for folder, by_dataset in zip(folders, tables):
        stem = osp.basename(osp.normpath(folder))
        labels = list(dict.fromkeys(label for table in by_dataset.values() for label in table.rows))
        names.append({label: stem if len(labels) == 1 else f'{stem}/{label}' for label in labels})
    return names


def compare_runs(folders: Sequence[str], baseline: Optional[str] = None) -> List[Comparison]:
    """One :class:`Comparison` per dataset found in any of ``folders`` (tools/test.py results folders).

    ``baseline``: a method name (folder name, or ``folder/label``); default the first folder's first row. A
    folder missing a dataset simply has no row in that dataset's table.
    """
    tables = [read_results(folder) for folder in folders]
    names = _method_names(folders, tables)
    datasets = list(dict.fromkeys(dataset for by_dataset in tables for dataset in by_dataset))
    all_methods = [name for mapping in names for name in mapping.values()]
    if len(set(all_methods)) != len(all_methods):
        raise ValueError(f'two result folders share a name ({all_methods}): give them different folder names')
    if baseline is not None and baseline not in all_methods:
        raise ValueError(f'--baseline {baseline!r} is none of the methods {all_methods}')
    comparisons = []
    for dataset in datasets:
        columns: Dict[str, str] = {}
        rows: Dict[str, Dict[str, Cell]] = {}
        notes: List[str] = []
        for by_dataset, mapping in zip(tables, names):
            table = by_dataset.get(dataset)
            if table is None:
                continue
            columns.update((label, better) for label, better in table.columns.items() if label not in columns)
            for label, cells in table.rows.items():
                rows[mapping[label]] = dict(cells)
            notes += [f'{"/".join(mapping.values())}: {note}' for note in table.notes]
        for cells in rows.values():
            for label in columns:
                cells.setdefault(label, NOT_MEASURED)
        base = baseline if baseline in rows else next(iter(rows))
        ordered = {base: rows[base], **{m: c for m, c in rows.items() if m != base}}
        comparisons.append(Comparison(dataset, base, columns, ordered, notes))
    return comparisons


def comparison_csv(comparisons: Sequence[Comparison]) -> str:
    """All datasets' CSV rows as text (each dataset with its own header line)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for comparison in comparisons:
        writer.writerows(comparison.csv_rows())
    return buffer.getvalue()


def write_comparison(comparisons: Sequence[Comparison], out_md: str, title_note: str = '') -> Dict[str, str]:
    """Write the Markdown tables to ``out_md`` and the CSV beside it (same stem, ``.csv``); returns both paths."""
    out_csv = osp.splitext(out_md)[0] + '.csv'
    with open(out_md, 'w', encoding='utf-8') as handle:
        handle.write('\n'.join(c.to_markdown(title_note) for c in comparisons))
    with open(out_csv, 'w', encoding='utf-8', newline='') as handle:
        handle.write(comparison_csv(comparisons))
    return {'md': out_md, 'csv': out_csv}
