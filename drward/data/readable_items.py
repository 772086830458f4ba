"""Going through a test set whose folder holds some unreadable files: skip them, name them, go on.

BasicSR's test datasets (``PairedImageDataset``, ``SingleImageDataset``) fail on a corrupt file, and their loaders
(batch 1, no shuffling, no workers) would end the whole evaluation there. :func:`readable_batches` reads the set
item by item instead, exactly what such a loader yields, and records each item that raises — by file name — so
that a report can list it. Items a drward dataset itself replaced (its :class:`~drward.data.bad_images.
BadImageGuard`) are listed too.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from basicsr.utils import get_root_logger
from torch.utils.data import default_collate


def item_name(dataset, index: int) -> str:
    """The file behind item ``index``: BasicSR's ``paths`` (a path, or a dict with ``lq_path``), drward's
    ``gt_paths``, else ``item <index>``."""
    paths = getattr(dataset, 'paths', None) or getattr(dataset, 'gt_paths', None)
    if paths is None or index >= len(paths):
        return f'item {index}'
    entry = paths[index]
    return entry.get('lq_path', str(entry)) if isinstance(entry, dict) else str(entry)


def readable_batches(dataloader, skipped: List[str], select: Optional[Callable[[int], bool]] = None
                     ) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(index, batch of one item)`` for each item of ``dataloader.dataset`` that reads (only the indices
    ``select`` keeps: a rank's share); each one that does not is logged and appended to ``skipped`` as
    ``"<file> (<error>)"``. Raises if no item reads at all."""
    dataset, first_error, yielded = dataloader.dataset, None, 0
    for index in range(len(dataset)):
        if select is not None and not select(index):
            continue
        try:
            item = dataset[index]
        except Exception as error:  # noqa: BLE001 - a dataset's reader raises anything on a corrupt file
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            skipped.append(f'{item_name(dataset, index)} ({reason})')
            get_root_logger().warning(f'skipping unreadable test item {skipped[-1]}')
            first_error = first_error or error
            continue
        yielded += 1
        yield index, default_collate([item])
    guard = getattr(dataset, 'guard', None)
    skipped.extend(f'{path} ({reason})' for path, reason in (guard.bad.items() if guard is not None else ())
                   if f'{path} ({reason})' not in skipped)
    if yielded == 0 and first_error is not None:
        raise RuntimeError(f'none of the {len(dataset)} items of the test set could be read; first: '
                           f'{skipped[0]}') from first_error
