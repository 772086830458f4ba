"""Active selection (uncertainty order, background refits, the simulation) and the label-log report."""
import importlib.util
import os

import numpy as np

from drward.annotate.active import UncertaintyRanker, simulate_labelling, uncertainty_order
from drward.annotate.demo import make_demo_pairs
from drward.annotate.label_log import append_record, decision_record
from drward.annotate.label_report import cohens_kappa, report_lines
from drward.annotate.label_store import LabelStore
from drward.annotate.quality import build_metrics
from drward.data.pairs_file import PreferencePair

TOOL = os.path.join(os.path.dirname(__file__), os.pardir, 'tools', 'label_pairs.py')


def test_uncertainty_order_puts_the_least_sure_pairs_first():
    assert uncertainty_order(np.array([0.9, 0.375, 0.25, 0.625, 0.5]), [4, 3, 2, 1, 0]) == [4, 3, 1, 2, 0]


def _separable_task(n=300, seed=0):
    rng = np.random.default_rng(seed)
    values_a, values_b = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    truth = (values_a[:, 0] > values_b[:, 0]).astype(float)  # metric 0 decides
    return np.hstack([values_a, values_b]), truth


def test_simulated_labelling_learns_the_rule_and_uncertainty_asks_near_the_boundary():
    features, truth = _separable_task()
    pool, held_out = np.arange(200), np.arange(200, 300)
    curves = {order: simulate_labelling(features, truth, pool, held_out, order, budget=60, step=20, flip=0.0,
                                        rng=np.random.default_rng(1)) for order in ('random', 'uncertainty')}
    assert sorted(curves['random']) == [20, 40, 60] and curves['random'][20] == curves['uncertainty'][20]
    assert curves['uncertainty'][60] > 0.8 and curves['random'][60] > 0.8  # metric 0 alone decides: learnable


def test_ranker_refits_every_n_labels_and_the_store_asks_the_least_sure_pair(tmp_path):
    demo = make_demo_pairs(str(tmp_path), faces=3, size=64, variants=4, human_fraction=0.0)
    ranker = UncertaintyRanker(demo.pairs, build_metrics('no_face'), str(tmp_path / 'm.sqlite'), refit_every=6)
    store = LabelStore(demo.pairs, str(tmp_path / 'human.jsonl'), order='uncertainty', ranker=ranker,
                       on_label=lambda s: None)
    ranker.start(store).join(timeout=60)
    assert ranker.features is not None and ranker.fits == 0  # no labels yet: random order
    for _ in range(6):  # the simulated person: the demo's known rule
        shown = store.current('ana')
        truth = demo.truth[(shown.pair.image_a, shown.pair.image_b)]
        store.decide('ana', 'left' if (truth == 1.0) == (shown.shown_left == 'image_a') else 'right')
    ranker.refit(store.labels())  # what on_label starts in a thread
    assert ranker.fits == 1
    store.release('ana')
    labelled = store.labelled_indices()
    least_sure = min((i for i in range(len(demo.pairs)) if i not in labelled),
                     key=lambda i: (abs(ranker.p[i] - 0.5), ranker.random_order.index(i)))
    assert store.current('ana').index == least_sure


def _log(tmp_path):
    out = tmp_path / 'human.jsonl'
    pairs = [PreferencePair(f'a{i}.png', f'b{i}.png') for i in range(4)]
    answers = {'ana': [1.0, 0.0, 1.0, 0.5], 'bo': [1.0, 0.0, 0.0, 0.5]}
    for who, labels in answers.items():
        for i, (pair, label) in enumerate(zip(pairs, labels)):
            append_record(out, decision_record(pair, 'label', who, label, 'image_a' if i % 2 == 0 else 'image_b',
                                               seconds=2.0 + i))
    append_record(out, decision_record(pairs[0], 'skip', 'bo', shown_left='image_a'))
    append_record(out, decision_record(pairs[0], 'undo', 'bo'))
    return out


def test_report_counts_kappa_position_bias_and_time(tmp_path):
    lines = report_lines(str(_log(tmp_path)), metrics=None)
    # ana: A, B, A (+ a tie) with image_a shown left, right, left: the left image every time; bo: B on pair 2
    assert 'ana | 4 | 1 | 0 | 0 | 100.0% of 3 | 3.5 | 3.5' in lines
    assert 'bo | 4 | 1 | 0 | 1 | 66.7% of 3 | 3.5 | 3.5' in lines  # the skip was undone
    # answers A,B,A,tie vs A,B,B,tie: p_o = 3/4, p_e = (2*1 + 1*2 + 1*1)/16 = 5/16, kappa = (12/16-5/16)/(11/16)
    assert f"Cohen's kappa ana vs bo: {7 / 11:.3f} on 4 overlap pairs" in lines
    assert cohens_kappa(list('AB'), list('AB')) == 1.0


def test_tool_report_prints_the_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('label_pairs_tool', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(['--report', str(_log(tmp_path)), '--metrics', 'none']) == 0
    out = capsys.readouterr().out
    assert 'annotator | labels | ties | skips | undos | chose left | median s | mean s' in out
    assert tool.main(['--report', str(tmp_path / 'missing.jsonl')]) == 1
