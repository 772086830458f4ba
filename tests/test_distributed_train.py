"""``torchrun --nproc_per_node 2 tools/train.py -opt options/refl_diffbir_tiny.yml --launcher pytorch`` on the CPU
(gloo), as the README shows it, cut short with ``--force_yml``: it runs to the end and its training states hold both
ranks' random streams. A second run gets SIGUSR1 (SLURM's ``--signal``) on rank 1 only, once its first checkpoint
is written: both ranks stop after the same iteration, save it and exit with status 75; resumed with
``--auto_resume`` on two processes it ends with the uninterrupted run's weights and FRM, bit for bit (same machine,
same thread count: the same kernels run on the same inputs; a two-rank all-reduce adds two numbers, which
commutes exactly). Restarts after a SIGKILL and two-node runs: ``benchmarks/cluster_reliability.py``."""
import os
import re
import shutil
import signal

import pytest
from torchrun_helpers import (
    EVERY,
    ONE_NODE,
    ROOT,
    TOTAL,
    final_weights,
    max_difference,
    signal_worker_after_first_state,
    torchrun,
    torchrun_train,
    train_args,
)

from drward.data.demo_faces import ensure_demo_faces
from drward.utils.preemption import EXIT_PREEMPTED
from drward.utils.safe_load import load_training_state

pytestmark = pytest.mark.heavy  # whole training runs: scheduled first (tests/conftest.py)


def test_two_process_tiny_run_preempted_by_sigusr1_resumes_with_auto_resume_to_the_same_weights(tmp_path):
    names = [f'pytest_torchrun_{tag}_{os.getpid()}' for tag in ('whole', 'preempted')]
    exps = [os.path.join(ROOT, 'experiments', name) for name in names]
    ensure_demo_faces(str(tmp_path / 'faces'), size=64)
    ensure_demo_faces(str(tmp_path / 'val'), size=64, count=2)
    try:
        whole = torchrun_train(names[0], str(tmp_path))
        log = whole.stdout + whole.stderr
        assert whole.returncode == 0, log[-4000:]
        assert 'World size (gpu number): 2' in log and 'End of training' in log
        assert 'Validation demo_faces_tiny_val' in log  # rank 0 validated at the end
        state = load_training_state(os.path.join(exps[0], 'training_states', f'{EVERY}.state'))
        assert sorted(state['random']) == [0, 1]
        expected = final_weights(exps[0])

        log_path = str(tmp_path / 'preempted.log')
        run = torchrun(ONE_NODE, train_args(names[1], str(tmp_path)), log_path)
        signal_worker_after_first_state(run, exps[1], signal.SIGUSR1)  # rank 1 only: the ranks must agree
        assert run.wait(timeout=600) != 0  # torchrun reports its workers' exit status 75 as a failure
        log = open(log_path).read()
        codes = re.findall(r'exitcode\s*:\s*(\d+)', log)  # torchrun's summary of its failed workers
        assert set(codes) == {str(EXIT_PREEMPTED)} and len(codes) >= 2, log[-4000:]  # both ranks
        stopped = re.findall(r'Preempted \(a signal on another rank\): saved the state and checkpoints of '
                             r'iteration (\d+)', log)  # rank 0 logs; it was told by rank 1
        assert len(stopped) == 1 and EVERY <= int(stopped[0]) < TOTAL, log[-4000:]
        resumed = torchrun_train(names[1], str(tmp_path), '--auto_resume')
        log = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, log[-4000:]
        assert f'Resuming training from epoch: 0, iter: {stopped[0]}.' in log  # 4 iterations per epoch
        assert f'continues after its first {stopped[0]} batches' in log
        diff = max_difference(final_weights(exps[1]), expected)
        assert diff == 0.0, f'max abs difference {diff} after resuming on two processes'
    finally:
        for name, exp in zip(names, exps):
            shutil.rmtree(exp, ignore_errors=True)
            shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)
