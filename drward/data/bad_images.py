"""Training on folders with a few bad images: skip them with a warning, stop only when too many are bad.

A dataset asks :class:`BadImageGuard` to :meth:`~BadImageGuard.read` item ``i``; if the image cannot be used
(unreadable, truncated, not an image, too small — :class:`~drward.data.image_io.ImageReadError`) the guard logs
one warning naming the file, remembers it, and reads the next item instead (``i + 1``, ``i + 2``, … modulo the
dataset's length), so a batch is always full and the choice of substitute is deterministic. When more than
``max_bad_fraction`` of the dataset has turned out bad the guard raises :class:`TooManyBadImagesError`: a folder
that bad is the wrong folder, not one with a few bad files. (With DataLoader workers each worker keeps its own
tally, so the stop can come somewhat later than the fraction says.)
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple, TypeVar

from basicsr.utils import get_root_logger

from drward.data.image_io import ImageReadError

T = TypeVar('T')
#: Default ``max_bad_fraction``: a few corrupt files are skipped; a tenth of the set unreadable stops the run.
DEFAULT_MAX_BAD_FRACTION = 0.1


class TooManyBadImagesError(ImageReadError):
    """More than the allowed fraction of a dataset's images could not be read; the message lists some."""


class BadImageGuard:
    """Reads items through a callable, skipping bad images (see the module docstring)."""

    def __init__(self, owner: str, paths: Sequence[str], max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION) -> None:
        if not 0.0 <= float(max_bad_fraction) <= 1.0:
            raise ValueError(f'{owner}: max_bad_fraction must lie in [0, 1], got {max_bad_fraction}')
        self.owner, self.paths, self.max_bad_fraction = owner, list(paths), float(max_bad_fraction)
        self.bad: Dict[str, str] = {}

    def read(self, index: int, load: Callable[[int], T]) -> Tuple[int, T]:
        """``(i, load(i))`` for the first usable item from ``index`` on (``index`` itself when it is readable)."""
        n = len(self.paths)
        if not -n <= int(index) < n:  # iteration over a dataset by __getitem__ stops on IndexError
            raise IndexError(f'{self.owner}: index {int(index)} out of range for {n} items')
        for step in range(n):
            i = (int(index) + step) % n
            if self.paths[i] in self.bad:
                continue
            try:
                return i, load(i)
            except ImageReadError as error:
                self.skip(self.paths[i], str(error))
        raise TooManyBadImagesError(f'{self.owner}: none of its {n} images can be read')

    def skip(self, path: str, reason: str) -> None:
        """Record a bad file, warn once naming it, and stop if too many are bad."""
        self.bad[path] = reason
        get_root_logger().warning(f'{self.owner}: skipping {path}: {reason}')
        if len(self.bad) > self.max_bad_fraction * len(self.paths):
            listed = '; '.join(list(self.bad)[:5]) + (' ...' if len(self.bad) > 5 else '')
            raise TooManyBadImagesError(
                f'{self.owner}: {len(self.bad)} of {len(self.paths)} images are unreadable, more than '
                f'max_bad_fraction = {self.max_bad_fraction} ({listed}); fix the folder or raise max_bad_fraction')

    @property
    def skipped(self) -> List[str]:
        return list(self.bad)
