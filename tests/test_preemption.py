"""Preemption (drward.utils.preemption): a signal is only recorded; the watched step finishes, the model saves the
iteration it was in, one line is logged and the process exits with EXIT_PREEMPTED; a second signal during the save
changes nothing. (End to end: tests/test_resume_bit_identical.py, tests/test_distributed_train.py.)"""
import os
import signal

import pytest
import torch

from drward.utils import preemption
from drward.utils.atomic_io import atomic_save


@pytest.fixture
def handlers(monkeypatch):
    """drward's handlers for the test only; the previous ones (pytest's) put back afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in preemption.SIGNALS}
    monkeypatch.setitem(preemption._STATE, 'signal', None)
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class _Model:
    def __init__(self, folder):
        self.folder, self.steps, self.saves = folder, [], []

    def optimize_parameters(self, current_iter):
        self.steps.append(current_iter)
        if current_iter == 3:
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives inside the step: the step goes on to its end
        self.steps.append(f'{current_iter} done')

    def save(self, epoch, current_iter):
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal in the middle of the save
        atomic_save({'iter': torch.tensor(current_iter)}, os.path.join(self.folder, f'{current_iter}.state'))
        self.saves.append((epoch, current_iter))


def test_a_signal_finishes_the_step_saves_that_iteration_once_and_exits_75(tmp_path, handlers):
    model, lines = _Model(str(tmp_path)), []
    preemption.watch(model, lambda: 1, lines.append)
    for it in (1, 2):
        model.optimize_parameters(it)
    assert model.saves == [] and preemption.received() is None
    with pytest.raises(SystemExit) as stop:
        model.optimize_parameters(3)
    assert stop.value.code == preemption.EXIT_PREEMPTED == 75
    assert model.steps[-2:] == [3, '3 done'] and model.saves == [(1, 3)]
    assert preemption.received() == 'SIGUSR1'  # the first signal; the SIGTERM during the save is ignored
    assert torch.load(tmp_path / '3.state', weights_only=True)['iter'] == 3
    assert sorted(os.listdir(tmp_path)) == ['3.state']  # no temporary file left by the interrupted-looking save
    assert lines == ['Preempted (SIGUSR1): saved the state and checkpoints of iteration 3; exiting with status 75. '
                     'Resume with --auto_resume.']
