"""make_candidates: the face-folder layout, the pairs file, reruns that add only what is missing."""
import os

from drward.annotate.candidates import CandidateRestorer, make_candidates, restorer_name
from drward.data.demo_faces import make_demo_faces
from drward.data.pairs_file import read_pairs


def _stub(builds):
    def build():
        builds.append(1)
        return lambda face, seed: (face // 2 + seed).astype(face.dtype)  # any deterministic "restoration"
    return CandidateRestorer('stub', build)


def test_layout_pairs_and_a_rerun_adds_only_what_is_missing(tmp_path):
    faces = make_demo_faces(str(tmp_path / 'gt'), size=32, count=2)
    task, builds = tmp_path / 'task', []
    counts = make_candidates(str(tmp_path / 'gt'), str(task), [_stub(builds)], seeds=(0, 1), degraded=2,
                             progress=False)
    assert counts == {'faces': 2, 'written': 8, 'kept': 0, 'pairs': 12, 'skipped': []}  # 2 faces × C(4, 2)
    folder = task / 'face_demo_face_000'
    assert sorted(os.listdir(folder)) == ['caption.txt', 'degraded_0.png', 'degraded_1.png', 'reference.png',
                                          'stub_s0.png', 'stub_s1.png']
    assert (folder / 'caption.txt').read_text().strip() == open(faces[0][:-4] + '.txt').read().strip()
    pairs = read_pairs(task / 'pairs.jsonl')
    assert all(p.reference == 'face_demo_face_000/reference.png' or p.reference.startswith('face_demo_face_001')
               for p in pairs)
    degraded = (folder / 'degraded_0.png').read_bytes()
    (folder / 'stub_s1.png').unlink()
    builds.clear()
    again = make_candidates(str(tmp_path / 'gt'), str(task), [_stub(builds)], seeds=(0, 1), degraded=2,
                            progress=False)
    assert again['written'] == 1 and again['kept'] == 7 and len(builds) == 1
    assert (folder / 'degraded_0.png').read_bytes() == degraded  # fixed seeds: the same copy
    builds.clear()
    make_candidates(str(tmp_path / 'gt'), str(task), [_stub(builds)], seeds=(0, 1), degraded=2, progress=False)
    assert builds == []  # nothing missing: the restorer is never built


def test_restorer_names_say_option_file_and_checkpoint():
    assert restorer_name('options/refl_diffbir.yml') == 'refl_diffbir'
    assert restorer_name('options/refl_diffbir.yml', 'exp/models/net_g_3500.safetensors') == 'refl_diffbir-net_g_3500'
