"""A SIGKILLed rank under ``torchrun --max-restarts 1``, without ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE``: torchrun
restarts both ranks, ``init_dist`` gives the new round its own key space in the shared store
(``drward/utils/elastic_store.py``), ``--auto_resume`` resumes from the first checkpoint, and the run ends bit for
bit on an uninterrupted one's weights — for the static rendezvous (``--master_port``) and the c10d one
(``--standalone``, ``--rdzv-backend c10d --rdzv-endpoint``). The round protocol itself: ``test_elastic_store.py``."""
import os
import shutil
import signal
import socket

import pytest
from torchrun_helpers import (
    ONE_NODE,
    ROOT,
    final_weights,
    max_difference,
    signal_worker_after_first_state,
    torchrun,
    train_args,
)

from drward.data.demo_faces import ensure_demo_faces

pytestmark = pytest.mark.heavy  # whole training runs: scheduled first (tests/conftest.py)

RESTARTS = ('--nproc_per_node', '2', '--max-restarts', '1')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def rendezvous_args(kind: str):
    return {'static': lambda: (*RESTARTS, '--master_port', str(free_port())),
            'standalone': lambda: ('--standalone', *RESTARTS),
            'c10d': lambda: ('--nnodes', '1', *RESTARTS, '--rdzv-backend', 'c10d',
                             '--rdzv-endpoint', f'127.0.0.1:{free_port()}')}[kind]()


def clean(name: str) -> None:
    shutil.rmtree(os.path.join(ROOT, 'experiments', name), ignore_errors=True)
    shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """The faces and the uninterrupted two-process run's final weights."""
    data = tmp_path_factory.mktemp('elastic')
    ensure_demo_faces(str(data / 'faces'), size=64)
    ensure_demo_faces(str(data / 'val'), size=64, count=2)
    name = f'pytest_elastic_ref_{os.getpid()}'
    try:
        run = torchrun(ONE_NODE, train_args(name, str(data)), str(data / 'ref.log'))
        assert run.wait(timeout=600) == 0, open(data / 'ref.log').read()[-3000:]
        yield str(data), final_weights(os.path.join(ROOT, 'experiments', name))
    finally:
        clean(name)


@pytest.mark.parametrize('kind', ['static', 'standalone', 'c10d'])
def test_killed_rank_is_restarted_without_the_variable_and_ends_bit_identical(reference, kind):
    data, expected = reference
    name = f'pytest_elastic_{kind}_{os.getpid()}'
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_DISABLE_SHARE_RDZV_TCP_STORE'}
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    log_path = os.path.join(data, f'{kind}.log')
    try:
        run = torchrun(rendezvous_args(kind), train_args(name, data, '--auto_resume'), log_path, env=env)
        signal_worker_after_first_state(run, os.path.join(ROOT, 'experiments', name), signal.SIGKILL)
        status = run.wait(timeout=600)
        log = open(log_path).read()
        assert status == 0, log[-4000:]
        assert 'round2 (torchrun restart count 1' in log  # the restarted round got its own key space
        assert 'Resuming training from epoch: 0, iter: 3.' in log
        diff = max_difference(final_weights(os.path.join(ROOT, 'experiments', name)), expected)
        assert diff == 0.0, f'max abs difference {diff} after a restart ({kind} rendezvous)'
    finally:
        clean(name)
