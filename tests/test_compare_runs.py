"""tools/compare_runs.py on result folders written by tools/test.py's own writer (ResultsTable.write): one row per
method, direction arrows, relative change against the baseline, best in bold, n/a with the recorded reason."""
import csv
import io
import os

import pytest

from drward.metrics.catalog import metric_info
from drward.metrics.compare import compare_runs, comparison_csv
from drward.metrics.evaluate import metric_columns, unavailable
from drward.metrics.report import ResultsTable
from drward.utils.options import MissingWeightsError
from tools import compare_runs as cli

METRICS = {'lmd': {'type': 'calculate_lmd'}, 'musiq': {'type': 'calculate_musiq'},
           'aesthetic': {'type': 'calculate_aesthetic'}, 'maniqa': {'type': 'calculate_maniqa'}}
MISSING = unavailable(MissingWeightsError('missing weight file weights/iqa/ckpt_koniq10k.pt (option key m)'))


def _results_folder(root, name, cells, label='DiffBIRRestorer', json_too=True):
    """A results/<name>/ folder as tools/test.py (FaceTestModel) leaves it, written by the same writer."""
    table = ResultsTable('CelebA-Test', metric_columns(METRICS))
    table.add_row(label, cells)
    table.notes.append('3000 images')
    folder = root / name
    paths = table.write(str(folder))
    if not json_too:
        os.remove(paths['json'])
    return str(folder)


@pytest.fixture
def two_runs(tmp_path):
    # the paper's CelebA-Test numbers: DiffBIR, then DiffBIR + ours (LMD −4.55 %, MUSIQ +1.83 %, Aes +1.80 %)
    base = _results_folder(tmp_path, 'diffbir', {'lmd': 1.9531, 'musiq': 73.4745, 'aesthetic': 5.7441,
                                                 'maniqa': MISSING})
    ours = _results_folder(tmp_path, 'diffbir_ours', {'lmd': 1.8642, 'musiq': 74.82, 'aesthetic': 5.8475,
                                                      'maniqa': MISSING})
    return base, ours


def test_table_has_a_row_per_method_arrows_relative_change_and_bold_best(two_runs):
    [comparison] = compare_runs(list(two_runs))
    text = comparison.to_markdown()
    assert '| method | LMD↓ | MUSIQ↑ | Aesthetic↑ | MANIQA↑ |' in text
    assert '| diffbir | 1.9531 | 73.4745 | 5.7441 | n/a (missing weights/iqa/ckpt_koniq10k.pt) |' in text
    assert ('| diffbir_ours | **1.8642** (−4.55 % ✓) | **74.8200** (+1.83 % ✓) | **5.8475** (+1.80 % ✓) | '
            'n/a (missing weights/iqa/ckpt_koniq10k.pt) |') in text


def test_baseline_option_reorders_and_flips_the_changes(two_runs):
    [comparison] = compare_runs(list(two_runs), baseline='diffbir_ours')
    assert list(comparison.rows) == ['diffbir_ours', 'diffbir']
    assert comparison.change('diffbir', 'LMD') == pytest.approx(100 * (1.9531 - 1.8642) / 1.8642)
    with pytest.raises(ValueError, match='none of the methods'):
        compare_runs(list(two_runs), baseline='nope')


def test_csv_has_full_precision_values_and_changes(two_runs):
    rows = list(csv.reader(io.StringIO(comparison_csv(compare_runs(list(two_runs))))))
    assert rows[0][:4] == ['dataset', 'method', 'LMD↓', 'LMD↓ Δ% vs diffbir']
    assert rows[2][1:4] == ['diffbir_ours', '1.8642', '-4.5517']


def test_a_folder_without_json_is_read_from_its_csv_and_a_missing_column_is_not_measured(tmp_path, two_runs):
    older = _results_folder(tmp_path, 'older', {'lmd': 2.0, 'musiq': 70.0, 'aesthetic': 5.5, 'maniqa': MISSING},
                            json_too=False)
    table = ResultsTable('CelebA-Test', {'lmd': metric_info('lmd', METRICS['lmd'])})
    table.add_row('x', {'lmd': 1.9})
    table.write(str(tmp_path / 'lmd_only'))
    [comparison] = compare_runs([two_runs[0], older, str(tmp_path / 'lmd_only')])
    assert comparison.rows['older']['MUSIQ'] == 70.0 and comparison.columns['LMD'] == 'lower'
    assert comparison.rows['older']['MANIQA'].startswith('n/a (missing weights/iqa/')
    assert comparison.rows['lmd_only']['MUSIQ'] == 'n/a (not measured)'


def test_cli_prints_markdown_and_writes_md_and_csv(two_runs, tmp_path, capsys):
    out = tmp_path / 'table.md'
    assert cli.main([*two_runs, '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert '−4.55 % ✓' in printed and out.exists() and (tmp_path / 'table.csv').exists()
    assert cli.main([str(tmp_path / 'nothing_here')]) == 2
    assert 'no *_results.json' in capsys.readouterr().err


def test_rows_are_named_by_their_labels_when_the_folders_labels_differ(tmp_path):
    cells = {'lmd': 1.9, 'musiq': 70.0, 'aesthetic': 5.5, 'maniqa': MISSING}
    folders = [_results_folder(tmp_path, f'run{i}', cells, label=label) for i, label in enumerate(('full', 'no_reg'))]
    [comparison] = compare_runs(folders, baseline='no_reg')
    assert list(comparison.rows) == ['no_reg', 'full']
