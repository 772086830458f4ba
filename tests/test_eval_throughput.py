"""benchmarks/eval_throughput.py --smoke: the plumbing of the batch-size benchmark in seconds (no timing asserted)."""
import json

from benchmarks.eval_throughput import main, prediction_lines


def test_smoke_run_reports_every_batch_size_within_one_dn_and_the_celeba_prediction(tmp_path, one_thread, capsys):
    assert main(['--smoke', '--json', str(tmp_path / 'out.json'), '--out', str(tmp_path / 'out.md')]) == 0
    results = json.load(open(tmp_path / 'out.json'))['results']
    assert [r['batch'] for r in results] == [1, 2]
    assert results[0]['max_dn_vs_b1'] == 0 and results[1]['max_dn_vs_b1'] <= 1
    assert all(r['faces_per_second'] > 0 and r['peak_mib'] >= 0 for r in results)
    text = (tmp_path / 'out.md').read_text()
    assert '| B | s / face | faces / s | peak MiB | max Δ vs B=1 (DN) |' in text
    assert 'on 8 processes: 2 x 375 x' in text and text in capsys.readouterr().out


def test_prediction_counts_each_process_share_of_both_rows():
    one, eight = prediction_lines(6.0)
    assert one.endswith('2 x 3000 x 6 s = 10.00 h (restoration only)')
    assert eight.endswith('2 x 375 x 6 s = 1.25 h (restoration only)')
