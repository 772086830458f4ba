"""Faces in images: detect, align to the FFHQ 512 template, paste restored faces back.

* :mod:`drward.face.template` — the FFHQ 5-point template and the fixed face box of aligned faces;
* :mod:`drward.face.dlib_models` — dlib's models shipped by ``face-recognition-models`` (offline);
* :mod:`drward.face.detect` — face detectors returning 5 landmarks (facexlib RetinaFace when its weight file is
  present, dlib HOG + 68-point shape otherwise);
* :mod:`drward.face.align` — similarity warp to the template and soft-mask paste-back;
* :mod:`drward.face.wild` — the in-the-wild path: detect → align → restore → paste back.
"""
