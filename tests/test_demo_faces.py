"""The bundled demo faces: deterministic, distinct, real faces, built once, captioned."""
import os

import cv2
import numpy as np
import pytest
import torch
from skimage import data, feature

from drward.data import demo_faces
from drward.data.demo_faces import (
    MAX_COUNT,
    demo_face_recipes,
    demo_face_tensor,
    ensure_demo_faces,
    make_demo_faces,
    render_demo_face,
)

SIZE = 64


def _folder_bytes(folder):
    return {name: open(os.path.join(folder, name), 'rb').read() for name in sorted(os.listdir(folder))}


def test_make_demo_faces_is_deterministic_to_the_byte(tmp_path):
    first = make_demo_faces(str(tmp_path / 'a'), size=SIZE)
    make_demo_faces(str(tmp_path / 'b'), size=SIZE)
    bytes_a, bytes_b = _folder_bytes(tmp_path / 'a'), _folder_bytes(tmp_path / 'b')
    assert len(first) == demo_faces.DEFAULT_COUNT
    assert len(bytes_a) == 2 * demo_faces.DEFAULT_COUNT  # a PNG and a caption per face
    assert bytes_a == bytes_b


def test_demo_faces_are_pairwise_distinct():
    faces = [render_demo_face(r, SIZE).astype(np.float32) / 255 for r in demo_face_recipes(demo_faces.DEFAULT_COUNT)]
    for i in range(len(faces)):
        for j in range(i + 1, len(faces)):
            assert np.abs(faces[i] - faces[j]).mean() > 0.01, (i, j)


def test_astronaut_variants_contain_a_detectable_face():
    detector = feature.Cascade(data.lbp_frontal_face_cascade_filename())
    for recipe in demo_face_recipes(6):
        assert recipe.source == 'astronaut'
        found = detector.detect_multi_scale(img=render_demo_face(recipe, 128), scale_factor=1.2, step_ratio=1,
                                            min_size=(40, 40), max_size=(128, 128))
        assert len(found) >= 1, recipe


def test_demo_faces_have_template_captions_beside_them(tmp_path):
    paths = make_demo_faces(str(tmp_path), size=SIZE, count=8)
    captions = [open(os.path.splitext(p)[0] + '.txt').read().strip() for p in paths]
    assert all(c.startswith('a photo of a ') and ' face, ' in c for c in captions)
    assert 'smiling' in captions[0] and 'greyscale' in captions[6]
    assert len(set(captions)) > 4


def test_ensure_demo_faces_builds_only_once(tmp_path, monkeypatch):
    folder = str(tmp_path / 'faces')
    calls = []
    original = demo_faces.make_demo_faces
    monkeypatch.setattr(demo_faces, 'make_demo_faces', lambda *a, **k: calls.append(a) or original(*a, **k))
    assert ensure_demo_faces(folder, SIZE) == folder
    stamp = os.stat(os.path.join(folder, 'demo_face_000.png')).st_mtime_ns
    ensure_demo_faces(folder, SIZE)
    assert len(calls) == 1
    assert os.stat(os.path.join(folder, 'demo_face_000.png')).st_mtime_ns == stamp


def test_ensure_demo_faces_rebuilds_at_another_size(tmp_path):
    folder = str(tmp_path)
    ensure_demo_faces(folder, 32)
    ensure_demo_faces(folder, 48)
    assert cv2.imread(os.path.join(folder, 'demo_face_000.png')).shape == (48, 48, 3)


def test_demo_face_tensor_matches_the_written_png(tmp_path):
    paths = make_demo_faces(str(tmp_path), size=SIZE, count=8)
    face = demo_face_tensor(SIZE, 7)
    assert face.shape == (3, SIZE, SIZE) and face.dtype == torch.float32
    assert 0.0 <= face.min() and face.max() <= 1.0
    png = cv2.imread(paths[7])[..., ::-1].astype(np.float32) / 255
    assert torch.equal(face, torch.from_numpy(png.copy()).permute(2, 0, 1))


def test_demo_face_count_outside_the_sources_is_an_error():
    with pytest.raises(ValueError, match='between 1 and'):
        demo_face_recipes(MAX_COUNT + 1)
