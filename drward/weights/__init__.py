"""Loaders/converters for the official checkpoints (docs/design.md §2 ``weights/``).

* :mod:`drward.weights.sd` — SD 2.1 LDM single file or diffusers folder → UNet, VAE, open_clip text tower;
* :mod:`drward.weights.diffbir` — DiffBIR ``v1_face.pth`` / ``v2.pth`` → IRControlNet; ``face_swinir_v1.ckpt`` →
  :class:`~drward.archs.face_swinir.FaceSwinIR`;
* :mod:`drward.weights.official_layout` — the inverse converters (modules → official key layouts), which
  :mod:`drward.weights.synthetic` writes its files with (the tiny test checkpoints: `tests/tiny_weights.py`).
* :mod:`drward.weights.pyiqa` — the pyiqa metrics' weight-file layout (a torch-hub-like folder, no download), read
  by the IQA metrics and the pyiqa rewards;
* :mod:`drward.weights.manifest` / :mod:`drward.weights.download` — the published files (``manifest.yml``: sources,
  sha256 / git blob id / size) and their verified download (``tools/download_weights.py``).

Every loader returns a :class:`ConversionReport`: keys loaded, known-ignored, left unused, and model keys missing.
"""
# the official-checkpoint loaders register themselves in drward.archs.checkpoint_loaders, where the restorers find them
from drward.weights import diffbir, osediff, sd  # noqa: E402,F401  (import registers)
from drward.weights.common import ConversionError, ConversionReport, load_state_dict_file

__all__ = ['ConversionError', 'ConversionReport', 'load_state_dict_file']
