"""tools/annotate.py and the pipeline end to end on tiny demo pairs (fast metrics, 64² faces)."""
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
from annotate_helpers import write_rgb_png

from drward.annotate.cache import MetricCache
from drward.annotate.demo import make_demo_pairs, severity
from drward.annotate.pipeline import annotate_pairs
from drward.annotate.quality import build_metrics
from drward.annotate.svm import SVMOptions
from drward.data.demo_faces import demo_face_recipes, render_demo_face
from drward.data.pairs_file import PreferencePair, read_pairs, write_pairs

TOOL = os.path.join(os.path.dirname(__file__), os.pardir, 'tools', 'annotate.py')
FAST = ['--metrics', 'no_face', '--no-progress', '--C', '1,10', '--cv-folds', '3']


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('annotate_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_run_labels_the_unlabelled_pairs_and_a_rerun_recomputes_nothing(tool, tmp_path, capsys):
    demo_args = ['--demo', str(tmp_path), '--demo-faces', '4', '--demo-size', '64', '--demo-variants', '5'] + FAST
    assert tool.main(demo_args) == 0
    first_out = capsys.readouterr().out
    given = read_pairs(tmp_path / 'pairs.jsonl')
    labelled = read_pairs(tmp_path / 'labelled.jsonl')
    report = json.loads((tmp_path / 'labelled.report.json').read_text())
    assert len(labelled) == len(given) == 40
    human_given = [(p.image_a, p.image_b, p.label) for p in given if p.is_human]
    assert [(os.path.join(str(tmp_path), p.image_a), os.path.join(str(tmp_path), p.image_b), p.label)
            for p in labelled if p.source == 'human'] == human_given
    svm_rows = [p for p in labelled if p.source == 'svm']
    assert len(svm_rows) == 40 - len(human_given) == report['n_svm_labelled']
    assert all(p.label in (0.0, 1.0) and 0.5 <= p.confidence <= 1.0 for p in svm_rows)
    assert set(report['fit_indices']).isdisjoint(report['held_out_indices'])
    assert all(given[i].is_human for i in report['fit_indices'] + report['held_out_indices'])
    assert 0.0 <= report['held_out_agreement'] <= 1.0 and 'demo_svm_label_accuracy' in report
    assert 'metric values: 120 computed' in first_out  # 20 images × 6 metrics
    assert tool.main(demo_args) == 0
    assert 'metric values: 0 computed, 120 from the cache' in capsys.readouterr().out


def test_missing_weight_file_stops_with_one_line_naming_it(tool, tmp_path, capsys):
    missing = str(tmp_path / 'musiq_koniq.pth')
    code = tool.main(['--demo', str(tmp_path), '--metrics', 'niqe,pyiqa:musiq',
                      '--metric-weights', f'pyiqa:musiq={missing}'])
    err = capsys.readouterr().err.strip()
    assert code == 1 and missing in err and len(err.splitlines()) == 1
    assert not (tmp_path / 'pairs.jsonl').exists()  # stopped before any work


def _face_folder_with_human_labels(root):
    """Three faces × four blurred copies (+ reference); human labels (less blur wins) for half the pairs."""
    human, blur_of = [], {}
    for f, recipe in enumerate(demo_face_recipes(3)):
        clean = render_demo_face(recipe, 64)
        write_rgb_png(os.path.join(root, f'face{f}', 'reference.png'), clean)
        for v, sigma in enumerate((0.6, 1.2, 2.0, 3.0)):
            path = write_rgb_png(os.path.join(root, f'face{f}', f'copy{v}.png'), cv2.GaussianBlur(clean, (0, 0), sigma))
            blur_of[path] = sigma
    paths = sorted(blur_of)
    for i, a in enumerate(paths):
        for b in paths[i + 1:]:
            if os.path.dirname(a) == os.path.dirname(b) and len(human) < 10:
                human.append(PreferencePair(b, a, label=float(blur_of[b] < blur_of[a]), source='human'))
    write_pairs(os.path.join(root, 'human.jsonl'), human)
    return human


def test_images_folder_with_human_labels(tool, tmp_path, capsys):
    human = _face_folder_with_human_labels(str(tmp_path))
    out = tmp_path / 'out' / 'labelled.jsonl'
    assert tool.main(['--images', str(tmp_path), '--human-labels', str(tmp_path / 'human.jsonl'),
                      '--out', str(out), '--held-out', '0.3'] + FAST) == 0
    assert f'human labels: {len(human)} matched pairs, 0 added' in capsys.readouterr().out
    labelled = read_pairs(out)
    assert len(labelled) == 18  # 3 faces × C(4, 2)
    assert sum(p.source == 'human' for p in labelled) == len(human)
    assert all(p.reference is not None and p.reference.endswith('reference.png') for p in labelled)


def test_soft_labels_and_confidence_threshold(tmp_path):
    demo = make_demo_pairs(str(tmp_path), faces=4, size=64, variants=5, human_fraction=0.5, seed=1)
    metrics = build_metrics('no_face')
    options = SVMOptions(C=(1.0,), cv_folds=3, held_out_fraction=0.25)
    result = annotate_pairs(demo.pairs, metrics, MetricCache(), options=options, soft_labels=True,
                            min_confidence=0.8, progress=False)
    svm_rows = [p for p in result.pairs if p.source == 'svm']
    n_unlabelled = sum(not p.is_human for p in demo.pairs)
    assert len(svm_rows) == result.n_svm_labelled == n_unlabelled - result.n_dropped_low_confidence
    assert all(p.confidence >= 0.8 and abs(p.label - 0.5) + 0.5 == pytest.approx(p.confidence) for p in svm_rows)
    assert sum(p.is_human for p in result.pairs) == sum(p.is_human for p in demo.pairs)


def test_demo_rule_prefers_the_less_degraded_copy(tmp_path):
    assert severity(0.5, 0.0) < severity(3.0, 0.0) < severity(3.0, 10.0)
    demo = make_demo_pairs(str(tmp_path), faces=2, size=64, variants=3, human_fraction=1.0, seed=0)
    assert len(demo.pairs) == 6 and all(p.is_human for p in demo.pairs)
    clear_cases = 0
    for pair in demo.pairs:  # where one copy is clearly closer to the clean reference, that one is preferred
        ref = cv2.imread(pair.reference).astype(float)
        error_a = np.abs(cv2.imread(pair.image_a) - ref).mean()
        error_b = np.abs(cv2.imread(pair.image_b) - ref).mean()
        assert pair.label == demo.truth[(pair.image_a, pair.image_b)]
        if abs(error_a - error_b) > 3.0:
            clear_cases += 1
            assert pair.label == float(error_a < error_b)
    assert clear_cases >= 2


def test_an_unreadable_image_is_skipped_with_its_pairs_and_listed_in_the_report(tmp_path):
    demo = make_demo_pairs(str(tmp_path), faces=4, size=64, variants=5, human_fraction=0.5, seed=1)
    bad = demo.pairs[-1].image_b  # an unlabelled pair's image
    with open(bad, 'wb') as handle:
        handle.write(b'\x89PNG\r\n\x1a\n torn')
    options = SVMOptions(C=(1.0,), cv_folds=3, held_out_fraction=0.25)
    result = annotate_pairs(demo.pairs, build_metrics('no_face'), MetricCache(), options=options, progress=False)
    uses_bad = [p for p in demo.pairs if bad in (p.image_a, p.image_b)]
    assert uses_bad and list(result.skipped_files) == [bad] and 'cannot decode' in result.skipped_files[bad]
    assert len(result.pairs) == len(demo.pairs) - len(uses_bad)
    assert all(bad not in (p.image_a, p.image_b) for p in result.pairs)
    summary = result.summary()
    assert summary['skipped_files'] == result.skipped_files
    assert any(line.startswith('skipped 1 unreadable image(s)') and bad in line for line in summary['summary_lines'])
