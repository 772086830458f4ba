"""The SVM: recovers a known preference rule from 12-D features; agreement measured only on pairs it never saw."""
import numpy as np
import pytest

from drward.annotate import pipeline
from drward.annotate.features import PairMetrics, PairStandardiser, pair_features, swap_features
from drward.annotate.svm import PreferenceSVM, SVMOptions, hard_labels, split_held_out
from drward.utils.options import OptionError

RULE = np.array([1.0, -0.8, 0.6, 0.0, 0.0, 0.0])  # metrics 0 and 2 good, metric 1 bad, three irrelevant


def synthetic_pairs(n: int, seed: int, noise: float = 0.0):
    """Per-image metrics on very different scales; label = [w·(m(A) − m(B)) + noise > 0]."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 50.0, 0.01, 3.0, 100.0, 1.0])
    values_a, values_b = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    labels = ((values_a - values_b) @ RULE + noise * rng.normal(size=n) > 0).astype(float)
    return PairMetrics([f'm{j}' for j in range(6)], values_a * scales + 7, values_b * scales + 7), labels


@pytest.mark.parametrize('kernel', ['rbf', 'linear'])
def test_svm_recovers_a_known_rule_on_pairs_it_never_saw(kernel):
    metrics, labels = synthetic_pairs(300, seed=1)
    options = SVMOptions(kernel=kernel, C=(0.1, 1.0, 10.0), held_out_fraction=0.3, confidence='margin')
    svm, report = pipeline.fit_with_held_out(metrics, labels, options, [True, False, True, True, True, True])
    assert set(report.fit_indices).isdisjoint(report.held_out_indices)
    assert len(report.held_out_indices) == 90
    assert report.held_out_agreement > 0.85  # chance is about 0.5
    assert report.cv_accuracy > 0.8
    # the reported figure is the agreement of this SVM on exactly the held-out rows
    _, predicted, _ = svm.predict(metrics.features()[report.held_out_indices])
    assert report.held_out_agreement == pytest.approx(np.mean(predicted == labels[report.held_out_indices]))


def test_no_held_out_pair_reaches_the_fit(monkeypatch):
    metrics, labels = synthetic_pairs(120, seed=2)
    seen = []
    original_fit = PreferenceSVM.fit

    def recording_fit(self, features, fit_labels):
        seen.append(np.array(features))
        return original_fit(self, features, fit_labels)

    monkeypatch.setattr(PreferenceSVM, 'fit', recording_fit)
    _, report = pipeline.fit_with_held_out(metrics, labels, SVMOptions(confidence='margin'), [True] * 6)
    fitted_rows = {row.tobytes() for row in seen[0]}
    held_rows = {row.tobytes() for row in metrics.features()[report.held_out_indices]}
    assert len(fitted_rows) == len(report.fit_indices)
    assert fitted_rows.isdisjoint(held_rows)


def test_noisy_labels_still_beat_chance_and_every_single_metric_rule():
    metrics, labels = synthetic_pairs(400, seed=3, noise=0.7)
    _, report = pipeline.fit_with_held_out(metrics, labels, SVMOptions(held_out_fraction=0.25, confidence='margin'),
                                           [True, False, True, True, True, True])
    assert report.held_out_agreement > 0.75
    assert report.held_out_agreement > max(report.single_metric_agreement.values())


@pytest.mark.parametrize('confidence', ['probability', 'margin'])
def test_prediction_does_not_depend_on_which_image_is_called_a(confidence):
    metrics, labels = synthetic_pairs(150, seed=4)
    svm = PreferenceSVM(SVMOptions(confidence=confidence, C=(1.0,))).fit(metrics.features(), labels)
    test_metrics, _ = synthetic_pairs(40, seed=5)
    p, label, conf = svm.predict(test_metrics.features())
    p_swapped, label_swapped, _ = svm.predict(swap_features(test_metrics.features()))
    np.testing.assert_allclose(p + p_swapped, 1.0, atol=1e-9)
    assert np.all((conf >= 0.5) & (conf <= 1.0))
    assert np.all(label[p != 0.5] != label_swapped[p != 0.5])


def test_held_out_split_is_disjoint_stratified_and_skips_ties():
    labels = np.array([1.0] * 30 + [0.0] * 30 + [0.5] * 5 + [0.8] * 10)
    fit_idx, held_idx = split_held_out(labels, 0.2, seed=0)
    assert set(fit_idx).isdisjoint(held_idx)
    assert set(fit_idx) | set(held_idx) == set(range(60)) | set(range(65, 75))
    y, _ = hard_labels(labels[held_idx])
    assert 0.3 < y.mean() < 0.8  # both sides represented


def test_standardiser_pools_a_and_b_and_commutes_with_swapping():
    metrics, _ = synthetic_pairs(50, seed=6)
    features = metrics.features()
    standardiser = PairStandardiser().fit(features)
    pooled = np.vstack([metrics.values_a, metrics.values_b])
    np.testing.assert_allclose(standardiser.mean_, pooled.mean(axis=0))
    np.testing.assert_allclose(standardiser.transform(swap_features(features)),
                               swap_features(standardiser.transform(features)))
    with_nan = features.copy()
    with_nan[0, 1] = np.nan
    assert standardiser.transform(with_nan)[0, 1] == 0.0  # missing value → the mean


def test_pair_features_are_a_then_b():
    a, b = np.arange(6.0)[None], -np.arange(6.0)[None]
    np.testing.assert_array_equal(pair_features(a, b), np.hstack([a, b]))
    with pytest.raises(ValueError):
        pair_features(a, b[:, :5])


@pytest.mark.parametrize('kwargs, fragment', [({'kernel': 'tree'}, 'kernel'), ({'confidence': 'vibes'}, 'confidence'),
                                              ({'held_out_fraction': 1.0}, 'held_out'), ({'C': (0.0,)}, 'C values')])
def test_bad_svm_options_fail_at_construction(kwargs, fragment):
    with pytest.raises(OptionError, match=fragment):
        SVMOptions(**kwargs)
