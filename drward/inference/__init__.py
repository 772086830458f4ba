"""Restoring people's own photos (``tools/restore.py``).

* :mod:`drward.inference.model` — the restorer from an option file's ``network_g`` (or the tiny one), a trained
  checkpoint, DDIM steps, seed, weight dtype and device;
* :mod:`drward.inference.photos` — whole photos (detect → align → restore → paste back) or aligned faces,
  written as ``cropped_faces/``, ``restored_faces/``, ``cmp/``, ``restored_imgs/`` with a summary;
* :mod:`drward.inference.demo_inputs` — a whole photo and an aligned face to try it on a fresh clone.
"""
