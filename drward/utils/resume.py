"""Finding the state a run resumes from, and where in its epoch it stopped.

:func:`newest_loadable_state` is ``--auto_resume``'s search: the newest ``training_states/<iter>.state`` whose files
all load — the state itself and every ``models/net_<label>_<iter>.*`` beside it — skipping (with a warning) any
state a kill or a full disk left incomplete. :func:`samples_done_in_epoch` says how far into its epoch the resumed
iteration was, so that the data order continues from there (``drward.utils.resumable_sampler``).
"""
from __future__ import annotations

import os
import os.path as osp
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from drward.utils.atomic_io import remove_stale_temp_files
from drward.utils.safe_load import load_training_state, load_weights

Loader = Callable[[str], Dict[str, Any]]


def load_state_file(path: str, location: str = 'cpu') -> Dict[str, Any]:
    """A ``<iter>.state`` file onto ``location``, read safely (:func:`~drward.utils.safe_load.load_training_state`)."""
    return load_training_state(path, map_location=location)


def check_weight_file(path: str) -> None:
    """Raise if ``path`` (a ``.pth`` zip or a ``.safetensors`` file) is torn or unreadable; reads no tensor data."""
    if path.endswith('.safetensors'):
        from safetensors import safe_open
        with safe_open(path, framework='pt') as handle:
            handle.keys()
    else:
        load_weights(path, map_location='cpu', mmap=True)


def checkpoint_files(models_dir: str, it: int) -> List[str]:
    """``models/net_<label>_<it>.<ext>``: the network checkpoints written with training state ``<it>.state``."""
    if not osp.isdir(models_dir):
        return []
    pattern = re.compile(rf'^net_.+_{it}\.(pth|safetensors)$')
    return [osp.join(models_dir, name) for name in sorted(os.listdir(models_dir)) if pattern.match(name)]


def state_iters(states_dir: str) -> List[int]:
    """The iterations of the ``<iter>.state`` files in ``states_dir``, newest first."""
    if not osp.isdir(states_dir):
        return []
    names = [name[:-len('.state')] for name in os.listdir(states_dir) if name.endswith('.state')]
    return sorted((int(name) for name in names if name.isdigit()), reverse=True)


def newest_loadable_state(states_dir: str, models_dir: str, load: Loader = load_state_file
                          ) -> Tuple[Optional[str], Optional[Dict[str, Any]], List[str]]:
    """``(path, state, warnings)`` of the newest state whose files all load; ``(None, None, warnings)`` if none.

    Temporary files a killed atomic write left behind are removed first (each removal is a warning line too).
    """
    notes = [f'removed the unfinished write {path}' for folder in (states_dir, models_dir)
             for path in remove_stale_temp_files(folder)]
    for it in state_iters(states_dir):
        path = osp.join(states_dir, f'{it}.state')
        try:
            state = load(path)
            for weights in checkpoint_files(models_dir, it):
                check_weight_file(weights)
        except Exception as error:  # noqa: BLE001 - any failure to load means "not resumable from here"
            notes.append(f'skipping training state {path}: it or a checkpoint beside it does not load '
                         f'({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""})')
            continue
        return path, state, notes
    return None, None, notes


def samples_done_in_epoch(resume_iter: int, epoch: int, batches_per_epoch: int,
                          batch_size: int) -> Optional[int]:
    """Samples (of this rank) the epoch had consumed at ``resume_iter``, or None when that cannot be known.

    Every epoch of a drward run (and of a BasicSR run never resumed before) is ``batches_per_epoch`` iterations
    long, so epoch ``e`` began after iteration ``e·batches_per_epoch``.
    """
    done = resume_iter - epoch * batches_per_epoch
    if batches_per_epoch <= 0 or not 0 <= done <= batches_per_epoch:
        return None
    return done * batch_size
