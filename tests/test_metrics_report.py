"""Results tables: relative change as the paper reports it, n/a cells, Markdown and CSV output, grids."""
import csv

import numpy as np
import pytest

from drward.metrics.catalog import MetricInfo, metric_info
from drward.metrics.evaluate import unavailable
from drward.metrics.report import ResultsTable, format_change, relative_change, side_by_side
from drward.utils.options import MissingWeightsError


def paper_table():
    columns = {'lmd': MetricInfo('LMD', 'lower'), 'musiq': MetricInfo('MUSIQ', 'higher'),
               'maniqa': MetricInfo('MANIQA', 'higher')}
    table = ResultsTable('CelebA-Test', columns)
    table.add_row('DiffBIR', {'lmd': 1.9531, 'musiq': 73.48, 'maniqa': 'n/a (missing w/pyiqa/ckpt_koniq10k.pt)'})
    table.add_row('DiffBIR+ours', {'lmd': 1.8642, 'musiq': 74.82, 'maniqa': 'n/a (missing w/pyiqa/ckpt_koniq10k.pt)'})
    return table


def test_relative_change_matches_the_papers_numbers():
    # the paper: LMD 1.8642 (−4.55 %), MUSIQ 74.82 (+1.83 %) against DiffBIR
    assert relative_change(1.8642, 1.9531) == pytest.approx(-4.55, abs=0.01)
    assert relative_change(74.82, 73.48) == pytest.approx(1.82, abs=0.01)
    assert relative_change('n/a', 1.0) is None and relative_change(1.0, 0.0) is None


def test_change_is_marked_as_improvement_by_the_metric_direction():
    assert format_change(-4.55, 'lower') == '−4.55 % ✓'
    assert format_change(-4.55, 'higher') == '−4.55 % ✗'
    assert format_change(1.83, 'higher') == '+1.83 % ✓'
    assert format_change(None, 'higher') == 'n/a'


def test_markdown_has_both_rows_the_change_row_and_na_with_the_path():
    text = paper_table().to_markdown()
    assert '| method | LMD↓ | MUSIQ↑ | MANIQA↑ |' in text
    assert '| DiffBIR | 1.9531 | 73.4800 | n/a (missing w/pyiqa/ckpt_koniq10k.pt) |' in text
    assert '| Δ% DiffBIR+ours vs DiffBIR | −4.55 % ✓ | +1.82 % ✓ | n/a |' in text


def test_write_gives_markdown_and_csv_with_the_same_cells(tmp_path):
    paths = paper_table().write(str(tmp_path))
    with open(paths['csv']) as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ['method', 'LMD↓', 'MUSIQ↑', 'MANIQA↑']
    assert rows[2][:3] == ['DiffBIR+ours', '1.8642', '74.8200']
    assert rows[3][0].startswith('Δ%')
    assert open(paths['md']).read().startswith('### CelebA-Test')


def test_missing_weight_error_becomes_na_with_the_path():
    error = MissingWeightsError('missing weight file w/clip/RN50.pt (option key k); official file: http://x')
    assert unavailable(error) == 'n/a (missing w/clip/RN50.pt)'
    assert unavailable(OSError('no network')) == 'n/a (no network)'


def test_catalog_directions_follow_the_options():
    assert metric_info('ids', {'type': 'calculate_ids', 'measure': 'similarity'}).better == 'higher'
    assert metric_info('ids', {'type': 'calculate_ids'}).better == 'lower'  # angle in degrees
    assert metric_info('fid', {'type': 'calculate_fid', 'reference': 'gt'}).needs_gt
    assert not metric_info('fid', {'type': 'calculate_fid'}).needs_gt
    assert metric_info('x', {'type': 'calculate_pyiqa', 'metric': 'lpips'}).needs_gt
    assert metric_info('niqe', {'type': 'calculate_niqe', 'better': 'lower'}).better == 'lower'


def test_side_by_side_resizes_to_one_height_and_keeps_panel_order():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 2] = 255
    blue = np.zeros((64, 64, 3), np.uint8)
    blue[..., 0] = 255
    grid = side_by_side([red, blue], ['a', 'b'])
    assert grid.shape[1] == 128 and grid.shape[0] > 64
    assert grid[-1, 10, 2] == 255 and grid[-1, 100, 0] == 255
