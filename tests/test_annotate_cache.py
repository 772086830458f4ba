"""The metric cache: a rerun recomputes nothing; an edited image, a new reference or a new metric version does."""
import os

import numpy as np
from annotate_helpers import CountingMetric, textured_rgb, write_rgb_png

from drward.annotate.cache import MetricCache, metric_key
from drward.annotate.features import compute_pair_metrics
from drward.annotate.quality import QualityMetric
from drward.data.pairs_file import PreferencePair


def _three_images(folder):
    return [write_rgb_png(os.path.join(folder, f'{name}.png'), textured_rgb(16, seed))
            for seed, name in enumerate(('a', 'b', 'c'))]


def test_rerun_with_a_fresh_cache_object_recomputes_nothing(tmp_path):
    a, b, c = _three_images(str(tmp_path))
    pairs = [PreferencePair(a, b), PreferencePair(a, c), PreferencePair(b, c)]
    plain, fidelity = CountingMetric('plain'), CountingMetric('fidelity', needs_reference=True)
    metrics = [plain.metric, fidelity.metric]
    with MetricCache(tmp_path / 'cache.sqlite') as cache:
        first = compute_pair_metrics(pairs, metrics, cache, progress=False)
    assert len(plain.calls) == 3  # once per distinct image, although each image is in two pairs
    assert len(fidelity.calls) == 6  # once per (image, other image of the pair)
    with MetricCache(tmp_path / 'cache.sqlite') as cache:  # a rerun: new process, same cache file
        second = compute_pair_metrics(pairs, metrics, cache, progress=False)
        assert (cache.hits, cache.misses) == (12, 0)  # 6 (image, other image) jobs × 2 metrics
    assert len(plain.calls) == 3 and len(fidelity.calls) == 6
    np.testing.assert_array_equal(first.values_a, second.values_a)
    np.testing.assert_array_equal(first.values_b, second.values_b)


def test_an_edited_image_is_recomputed_and_only_that_one(tmp_path):
    a, b, _ = _three_images(str(tmp_path))
    counting = CountingMetric()
    cache = MetricCache(tmp_path / 'cache.sqlite')
    before = compute_pair_metrics([PreferencePair(a, b)], [counting.metric], cache, progress=False)
    write_rgb_png(b, textured_rgb(16, seed=99))
    os.utime(b, ns=(os.stat(b).st_atime_ns, os.stat(b).st_mtime_ns + 10**9))  # a later mtime, whatever the clock
    after = compute_pair_metrics([PreferencePair(a, b)], [counting.metric], cache, progress=False)
    assert len(counting.calls) == 3
    assert after.values_a[0, 0] == before.values_a[0, 0]
    assert after.values_b[0, 0] != before.values_b[0, 0]


def test_explicit_reference_is_part_of_the_key(tmp_path):
    a, b, c = _three_images(str(tmp_path))
    fidelity = CountingMetric('fidelity', needs_reference=True)
    cache = MetricCache()
    values = compute_pair_metrics([PreferencePair(a, b, reference=c)], [fidelity.metric], cache, progress=False)
    assert len(fidelity.calls) == 2
    assert metric_key(a, 'fidelity', '1', c) != metric_key(a, 'fidelity', '1', b)
    expected = textured_rgb(16, 0).mean() - textured_rgb(16, 2).mean()
    assert values.values_a[0, 0] == expected


def test_a_new_metric_version_misses_the_cache(tmp_path):
    a, b, _ = _three_images(str(tmp_path))
    calls = []
    metric_v1 = QualityMetric('m', True, False, lambda image, ref: calls.append(1) or 1.0, version='1')
    metric_v2 = QualityMetric('m', True, False, lambda image, ref: calls.append(2) or 2.0, version='2')
    cache = MetricCache()
    compute_pair_metrics([PreferencePair(a, b)], [metric_v1], cache, progress=False)
    values = compute_pair_metrics([PreferencePair(a, b)], [metric_v2], cache, progress=False)
    assert calls == [1, 1, 2, 2] and values.values_a[0, 0] == 2.0


def test_nan_values_are_cached_as_nan(tmp_path):
    cache = MetricCache(tmp_path / 'c.sqlite')
    assert np.isnan(cache.get_or_compute('k', lambda: float('nan')))
    cache.close()
    reopened = MetricCache(tmp_path / 'c.sqlite')
    assert np.isnan(reopened.get_or_compute('k', lambda: 0.0)) and reopened.hits == 1
    assert len(reopened) == 1
