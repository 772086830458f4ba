"""In-the-wild faces: detection on a real photo, alignment to the FFHQ template, paste-back that keeps the rest."""
import numpy as np
import pytest
from skimage import data

from drward.face.align import align_face, paste_face
from drward.face.detect import DlibFaceDetector, build_face_detector, select_faces
from drward.face.template import face_template, five_points_from_68
from drward.face.wild import WildFaceRestorer

# The astronaut's face in skimage.data.astronaut() (512², RGB): roughly x 170–270, y 70–170.
FACE_CENTRE = np.array([220.0, 120.0])


@pytest.fixture(scope='module')
def astronaut():
    return data.astronaut()


@pytest.fixture(scope='module')
def detections(astronaut):
    return DlibFaceDetector().detect(astronaut)


def test_detector_finds_the_astronaut_face_first(detections):
    best = detections[0]
    centre = np.array([(best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2])
    assert np.linalg.norm(centre - FACE_CENTRE) < 30
    eyes_y = best.landmarks5[:2, 1]
    mouth_y = best.landmarks5[3:, 1]
    assert best.landmarks5[0, 0] < best.landmarks5[1, 0]  # template order: image-left eye first
    assert (mouth_y > eyes_y.max()).all()


def test_select_largest_keeps_the_face_and_min_size_drops_small_boxes(detections):
    assert select_faces(detections, 'largest')[0].box == detections[0].box
    assert select_faces(detections, 'all', min_size=10_000) == []


def test_alignment_puts_the_landmarks_on_the_template(astronaut, detections):
    aligned, matrix = align_face(astronaut, detections[0].landmarks5, 512)
    moved = detections[0].landmarks5 @ matrix[:, :2].T + matrix[:, 2]
    assert aligned.shape == (512, 512, 3)
    assert np.abs(moved - face_template(512)).max() < 16  # a 5-point similarity fit: ~3 % of the side at most
    rescan = DlibFaceDetector().detect(aligned)
    assert rescan, 'the aligned face is found again'
    assert np.abs(rescan[0].landmarks5 - face_template(512)).max() < 20


def test_paste_back_changes_the_face_and_keeps_far_pixels(astronaut):
    restorer = WildFaceRestorer(DlibFaceDetector(), face_size=256, select='largest')
    result = restorer(astronaut, lambda faces: 255 - faces)  # an obviously different "restoration"
    changed = np.abs(result.image.astype(int) - astronaut.astype(int)).sum(-1) > 0
    ys, xs = np.nonzero(changed)
    assert changed[int(FACE_CENTRE[1]), int(FACE_CENTRE[0])]
    # everything outside the warped face square (≈ 2.2 × the eye-to-mouth span around the face) is untouched
    assert ys.min() > 0 and xs.min() > 40 and xs.max() < 400 and ys.max() < 300
    assert np.array_equal(result.image[400:, :], astronaut[400:, :])
    assert np.array_equal(result.image[:, :40], astronaut[:, :40])


def test_paste_back_of_the_unchanged_aligned_face_reproduces_the_photo(astronaut, detections):
    aligned, matrix = align_face(astronaut, detections[0].landmarks5, 512)
    pasted = paste_face(astronaut, aligned, matrix)
    face = (slice(90, 150), slice(190, 250))
    assert np.abs(pasted[face].astype(int) - astronaut[face].astype(int)).mean() < 4


def test_no_face_leaves_the_image_as_is():
    blank = np.full((128, 128, 3), 128, np.uint8)
    result = WildFaceRestorer(DlibFaceDetector())(blank, lambda faces: faces * 0)
    assert result.faces == [] and np.array_equal(result.image, blank)


def test_upscale_resizes_the_background_and_pastes_at_scale(astronaut):
    small = astronaut[::2, ::2].copy()
    result = WildFaceRestorer(DlibFaceDetector(), face_size=128, upscale=2, select='largest')(small, lambda f: f)
    assert result.image.shape == (512, 512, 3) and len(result.faces) == 1


def test_auto_backend_falls_back_to_dlib_without_retinaface_weights(tmp_path):
    assert isinstance(build_face_detector('auto', str(tmp_path)), DlibFaceDetector)


def test_five_points_from_68_take_eye_centres_nose_and_mouth_corners():
    points = np.zeros((68, 2))
    points[36:42] = [10, 20]
    points[42:48] = [30, 20]
    points[30], points[48], points[54] = [20, 30], [12, 40], [28, 40]
    assert np.allclose(five_points_from_68(points), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
