"""Preemption: SIGTERM or SIGUSR1 make a training run save where it is and exit, ready for ``--auto_resume``.

A cluster stops a job with a signal: SLURM sends ``SIGTERM`` at the end of a job's time or on preemption (and
``--signal=USR1@120`` asks for ``SIGUSR1`` 120 s before), Kubernetes ``SIGTERM``. Installed in the training
pipeline (:func:`watch`), drward then

1. lets the iteration in progress finish (the handler only records the signal: no exception lands inside a step,
   a collective or a file write);
2. after that iteration, all ranks agree whether any of them was signalled (one all-reduce of a flag per
   iteration, so a signal that reached one rank only stops every rank at the same iteration);
3. every rank calls the model's ``save(epoch, iter)`` (rank 0 writes the checkpoints and the training state
   atomically, the state last), waits for the others, logs one line, and exits with :data:`EXIT_PREEMPTED`.

A second signal during the save is recorded and changes nothing: the save runs to its end. A SIGKILL during it
leaves at most a hidden temporary file, and ``--auto_resume`` takes the newest state whose files all load
(:mod:`drward.utils.resume`). The resumed run continues bit for bit: the state holds the optimisers, schedulers,
every rank's random streams and where the epoch's data order was.
"""
from __future__ import annotations

import signal
import sys
from typing import Callable, Dict, Optional

from drward.utils import distributed

#: The exit status of a run that saved its state on a signal (``EX_TEMPFAIL`` of ``sysexits.h``: "try again
#: later"). A job script may requeue on it; torchrun reports it as the workers' exit code.
EXIT_PREEMPTED = 75
#: The signals that ask for a save-and-exit.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_STATE: Dict[str, Optional[str]] = {'signal': None}


def _record(signum: int, frame) -> None:  # noqa: ARG001 - the signal module's handler signature
    """Remember the first signal; a later one (a second SIGTERM during the save) is ignored."""
    if _STATE['signal'] is None:
        _STATE['signal'] = signal.Signals(signum).name


def install_handlers() -> None:
    """Route :data:`SIGNALS` to :func:`_record` (main thread only, as Python requires)."""
    for sig in SIGNALS:
        signal.signal(sig, _record)


def received() -> Optional[str]:
    """The name of the signal this process received, or None."""
    return _STATE['signal']


def stop_requested() -> bool:
    """True on every rank when any rank received a signal (an all-reduce; the local flag in one process)."""
    return not distributed.all_ranks_agree(received() is None)


def save_and_exit(model, epoch: int, current_iter: int, log: Callable[[str], None]) -> None:
    """Write ``model``'s checkpoints and training state for ``current_iter``, log one line, exit."""
    model.save(epoch, current_iter)
    distributed.barrier()  # rank 0's files are complete before any rank leaves
    log(f'Preempted ({received() or "a signal on another rank"}): saved the state and checkpoints of iteration '
        f'{current_iter}; exiting with status {EXIT_PREEMPTED}. Resume with --auto_resume.')
    if distributed.is_dist():
        import torch.distributed as dist
        dist.destroy_process_group()
    sys.exit(EXIT_PREEMPTED)


def watch(model, epoch_of: Callable[[], int], log: Callable[[str], None]) -> None:
    """Check for a stop after each of ``model.optimize_parameters``'s iterations (patches that instance only).

    ``epoch_of()`` gives the epoch in progress (the train sampler's), stored with the state as BasicSR does.
    """
    install_handlers()
    step = model.optimize_parameters

    def optimize_parameters(current_iter: int, *args, **kwargs):
        out = step(current_iter, *args, **kwargs)
        if stop_requested():
            save_and_exit(model, epoch_of(), current_iter, log)
        return out

    model.optimize_parameters = optimize_parameters


__all__ = ['EXIT_PREEMPTED', 'SIGNALS', 'install_handlers', 'received', 'stop_requested', 'save_and_exit', 'watch']
