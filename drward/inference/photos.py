"""Restore people's own photos: ``tools/restore.py -i INPUT -o OUTPUT``, GFPGAN / CodeFormer style.

For every image of INPUT (one file, or the images directly in a folder: jpg, png, webp, bmp, tif; grey and RGBA
converted to RGB):

* whole photos: every face is detected (facexlib RetinaFace when ``weights/facexlib/detection_Resnet50_Final.pth``
  exists, dlib otherwise), aligned to the FFHQ template at ``face_size``², restored, and pasted back with a soft
  mask (:class:`drward.face.wild.WildFaceRestorer`);
* ``aligned`` inputs are faces already aligned: resized to ``face_size``², restored, resized back.

Outputs, under OUTPUT: ``cropped_faces/<stem>_NN.png`` (the aligned input face), ``restored_faces/<stem>_NN.png``,
``cmp/<stem>_NN.png`` (input face | restored face) and ``restored_imgs/<stem>.png`` (the whole image, the input's
size). An image without a face is copied to ``restored_imgs/`` unchanged and listed; an unreadable one is skipped
with its reason. No error in one image stops the others. The summary is printed and written to
``OUTPUT/summary.txt``.
"""
from __future__ import annotations

import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from drward.data.image_io import list_images, read_image
from drward.face.detect import DlibFaceDetector, build_face_detector
from drward.face.wild import WildFaceRestorer

OUTPUT_FOLDERS = ('cropped_faces', 'restored_faces', 'cmp', 'restored_imgs')
RestoreFace = Callable[[np.ndarray], np.ndarray]
RestoreFaces = Callable[[np.ndarray], np.ndarray]  # (N, S, S, 3) RGB uint8 → the restored faces, same shape


@dataclass
class ImageResult:
    """What happened to one input: ``status`` is 'restored', 'no face' or 'skipped' (``reason`` says why)."""

    path: str
    status: str
    faces: int = 0
    reason: str = ''


def _what_happened(result: ImageResult) -> str:
    if result.status == 'skipped':
        return f'skipped: {result.reason}'
    if result.status == 'no face':
        return 'no face found: copied to restored_imgs/ unchanged'
    note = f' ({result.reason})' if result.reason else ''
    return f'{result.faces} face{"s" if result.faces != 1 else ""} restored{note}'


@dataclass
class RunSummary:
    """All images of a run, the face-restoration time and the lines printed at the end."""

    results: List[ImageResult] = field(default_factory=list)
    face_seconds: float = 0.0
    total_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def faces(self) -> int:
        return sum(r.faces for r in self.results)

    def lines(self, restorer: str, output: str) -> List[str]:
        width = max([len(osp.basename(r.path)) for r in self.results] + [8])
        per_face = f'{self.face_seconds / self.faces:.2f} s per face' if self.faces else 'no face restored'
        out = [f'Restorer: {restorer}',
               f'Images  : {len(self.results)} -> {self.count("restored")} restored ({self.faces} faces), '
               f'{self.count("no face")} without a face (copied through), {self.count("skipped")} skipped']
        out += [f'  {osp.basename(r.path):<{width}}  {_what_happened(r)}' for r in self.results]
        out.append(f'Time    : {self.face_seconds:.1f} s restoring faces ({per_face}), '
                   f'{self.total_seconds:.1f} s in all')
        out.append(f'Results : {output}/{{{",".join(OUTPUT_FOLDERS)}}}/')
        return out


#: dlib's HOG detector scores (SVM margins) faces from about 0.5 up; below, its hits are mostly clutter (on
#: skimage's astronaut photo: the face 1.16, a shoulder patch 0.12). facexlib's RetinaFace already keeps p ≥ 0.8.
DLIB_MIN_SCORE = 0.5
#: Photos whose long side exceeds this are searched for faces at this size (then aligned from the full image).
DETECT_MAX_SIDE = 2048


class PhotoFaceDetector:
    """A face detector for photos of any size: it searches a copy shrunk to ``max_side`` at most, maps the faces
    back to the photo's pixels, and keeps the ones scoring at least ``min_score``."""

    def __init__(self, detector, min_score: float = 0.0, max_side: int = DETECT_MAX_SIDE):
        self.detector, self.min_score, self.max_side = detector, min_score, max_side
        self.name = detector.name + (f', score >= {min_score:g}' if min_score > 0 else '')

    def detect(self, img_rgb: np.ndarray) -> list:
        scale = min(1.0, self.max_side / max(img_rgb.shape[:2]))
        small = img_rgb if scale == 1.0 else cv2.resize(img_rgb, None, fx=scale, fy=scale,
                                                        interpolation=cv2.INTER_AREA)
        faces = [face for face in self.detector.detect(small) if face.score >= self.min_score]
        for face in faces:
            face.box = tuple(v / scale for v in face.box)
            face.landmarks5 = face.landmarks5 / scale
        return faces


def photo_face_detector(detector, min_score: Optional[float] = None) -> PhotoFaceDetector:
    """:class:`PhotoFaceDetector` around ``detector``; ``min_score`` defaults to :data:`DLIB_MIN_SCORE` for dlib and
    to none for facexlib."""
    if min_score is None:
        min_score = DLIB_MIN_SCORE if isinstance(detector, DlibFaceDetector) else 0.0
    return PhotoFaceDetector(detector, min_score)


def input_images(path: str) -> List[str]:
    """The image file ``path``, or the image files directly in the folder ``path`` (sorted by name)."""
    if osp.isfile(path):
        return [path]
    if not osp.exists(path):
        raise FileNotFoundError(f'input {path} does not exist')
    return list_images(path)


def read_rgb(path: str) -> np.ndarray:
    """An image as ``(H, W, 3)`` RGB uint8 (grey replicated, alpha dropped, 16 bit scaled)."""
    bgr = read_image(path)
    return np.ascontiguousarray((bgr[..., ::-1] * 255.0).round().astype(np.uint8))


def write_rgb(path: str, img: np.ndarray) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(img[..., ::-1])):
        raise OSError(f'cannot write {path}')


def output_stems(paths: List[str]) -> List[str]:
    """File stems for the outputs; two inputs with one stem (``a.jpg``, ``a.png``) keep their extension apart."""
    stems = [osp.splitext(osp.basename(p))[0] for p in paths]
    return [s if stems.count(s) == 1 else osp.basename(p).replace('.', '_') for s, p in zip(stems, paths)]


def resize_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    if img.shape[:2] == (height, width):
        return img
    shrink = img.shape[0] > height
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


@dataclass
class PreparedImage:
    """An image read and its faces found and aligned (``crops``), waiting for the restored faces (:meth:`finish`)."""

    path: str
    stem: str
    crops: List[np.ndarray]
    finish: Callable[[List[np.ndarray]], ImageResult]


class PhotoRestorer:
    """Run ``restore_face`` over the faces of a list of images and write GFPGAN-style output folders.

    With ``batch_size`` B > 1 and a batched ``restore_faces`` (``(N, S, S, 3)`` → same shape), the aligned faces of
    consecutive images are gathered and restored B at a time: a group photo's faces together, and the faces of a
    folder of photos or aligned faces across images. Each face's noise comes from the restorer's seed alone
    (:mod:`drward.diffusion.row_noise`), so the batch changes only the network's batch size."""

    def __init__(self, restore_face: RestoreFace, output: str, aligned: bool = False, face_size: int = 512,
                 detector=None, min_face: float = 16.0, batch_size: int = 1,
                 restore_faces: Optional[RestoreFaces] = None):
        self.restore_face = restore_face
        self.output = output
        self.aligned = aligned
        self.face_size = face_size
        if int(batch_size) < 1:
            raise ValueError(f'batch size must be >= 1, got {batch_size}')
        self.batch_size = int(batch_size)
        self.restore_faces = restore_faces
        if not aligned and detector is None:
            detector = photo_face_detector(build_face_detector())
        self.wild = None if aligned else WildFaceRestorer(detector, face_size, select='all', min_face=min_face)
        self.face_seconds = 0.0

    def _timed_restore(self, faces: np.ndarray) -> np.ndarray:
        """Restore ``faces`` (N, S, S, 3): ``batch_size`` at a time through ``restore_faces``, else one by one."""
        start = time.time()
        if self.restore_faces is None or self.batch_size == 1:
            restored = np.stack([self.restore_face(face) for face in faces])
        else:
            restored = np.concatenate([self.restore_faces(faces[i:i + self.batch_size])
                                       for i in range(0, len(faces), self.batch_size)])
        self.face_seconds += time.time() - start
        return restored

    def _write_faces(self, stem: str, crops: List[np.ndarray], restored: List[np.ndarray]) -> None:
        for index, (crop, face) in enumerate(zip(crops, restored)):
            name = f'{stem}_{index:02d}.png'
            write_rgb(osp.join(self.output, 'cropped_faces', name), crop)
            write_rgb(osp.join(self.output, 'restored_faces', name), face)
            write_rgb(osp.join(self.output, 'cmp', name), np.concatenate([crop, face], axis=1))

    def prepare_image(self, path: str, stem: str) -> Union[ImageResult, PreparedImage]:
        """Read one image and align its faces; a read error or a photo without a face is already a result."""
        try:
            img = read_rgb(path)
        except OSError as error:
            return ImageResult(path, 'skipped', reason=str(error))
        height, width = img.shape[:2]
        if self.aligned:
            crop = resize_to(img, self.face_size, self.face_size)

            def finish_aligned(restored: List[np.ndarray]) -> ImageResult:
                self._write_faces(stem, [crop], restored)
                write_rgb(osp.join(self.output, 'restored_imgs', f'{stem}.png'), resize_to(restored[0], height, width))
                return ImageResult(path, 'restored', 1, 'aligned face')
            return PreparedImage(path, stem, [crop], finish_aligned)
        found = self.wild.detect_and_align(img)
        if not found.faces:
            write_rgb(osp.join(self.output, 'restored_imgs', f'{stem}.png'), found.image)
            return ImageResult(path, 'no face')

        def finish_wild(restored: List[np.ndarray]) -> ImageResult:
            result = self.wild.paste(found, restored)
            write_rgb(osp.join(self.output, 'restored_imgs', f'{stem}.png'), result.image)
            self._write_faces(stem, result.aligned, result.restored)
            return ImageResult(path, 'restored', len(result.faces))
        return PreparedImage(path, stem, found.aligned, finish_wild)

    def restore_image(self, path: str, stem: str) -> ImageResult:
        """Restore one image's faces and write its outputs; read errors become a 'skipped' result."""
        prepared = self.prepare_image(path, stem)
        if isinstance(prepared, ImageResult):
            return prepared
        return prepared.finish(list(self._timed_restore(np.stack(prepared.crops))))

    def restore_images(self, paths: List[str], stems: List[str],
                       on_result: Optional[Callable[[ImageResult], None]] = None) -> List[ImageResult]:
        """Every image, its faces restored ``batch_size`` at a time across images; an error in one image (or in
        one batch: its images) never stops the others. ``on_result`` is called as each image is done."""
        results: Dict[int, ImageResult] = {}
        pending: List[Tuple[int, PreparedImage]] = []

        def done(index: int, result: ImageResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(result)

        def flush() -> None:
            try:
                restored = self._timed_restore(np.stack([crop for _, item in pending for crop in item.crops]))
            except Exception as error:  # noqa: BLE001  (one failed batch must not stop the others)
                for index, item in pending:
                    done(index, _failed(item.path, error))
                pending.clear()
                return
            start = 0
            for index, item in pending:
                faces = list(restored[start:start + len(item.crops)])
                start += len(item.crops)
                done(index, _guarded(item.path, lambda: item.finish(faces)))
            pending.clear()

        for index, (path, stem) in enumerate(zip(paths, stems)):
            prepared = _guarded(path, lambda: self.prepare_image(path, stem))
            if isinstance(prepared, ImageResult):
                done(index, prepared)
                continue
            pending.append((index, prepared))
            if self.batch_size == 1 or sum(len(item.crops) for _, item in pending) >= self.batch_size:
                flush()
        if pending:
            flush()
        return [results[i] for i in range(len(paths))]

    def run(self, paths: List[str], progress: bool = True) -> RunSummary:
        """Every image in turn (a tqdm bar), an error in one never stopping the others."""
        start, self.face_seconds = time.time(), 0.0
        for folder in OUTPUT_FOLDERS:
            os.makedirs(osp.join(self.output, folder), exist_ok=True)
        summary = RunSummary()
        bar = tqdm(total=len(paths), unit='image', desc='restore', disable=not progress)

        faces = [0]

        def advance(result: ImageResult) -> None:
            faces[0] += result.faces
            bar.update(1)
            bar.set_postfix(faces=faces[0])
        summary.results = self.restore_images(paths, output_stems(paths), advance)
        bar.close()
        summary.face_seconds, summary.total_seconds = self.face_seconds, time.time() - start
        return summary


def _failed(path: str, error: BaseException) -> ImageResult:
    return ImageResult(path, 'skipped', reason=f'{type(error).__name__}: {(str(error).splitlines() or [""])[0]}')


def _guarded(path: str, work: Callable[[], Any]) -> Any:
    """``work()``, or a 'skipped' result naming the error."""
    try:
        return work()
    except Exception as error:  # noqa: BLE001  (one bad image must not stop the others)
        return _failed(path, error)


def write_summary(summary: RunSummary, restorer: str, output: str, stream=None) -> List[str]:
    """Print the summary lines (to ``stream``, default stdout) and write them to ``output/summary.txt``."""
    lines = summary.lines(restorer, output)
    print('\n'.join(lines), file=stream, flush=True)
    with open(osp.join(output, 'summary.txt'), 'w', encoding='utf-8') as handle:
        handle.write('\n'.join(lines) + '\n')
    return lines

