"""Where a training or test run's host memory goes: run a drward tool in this process and log the resident set
(RSS) at the boundaries of one ReFL / FRM step, with the peak reached since the previous boundary.

    python benchmarks/rss_trace.py [--trim] tools/train.py -opt options/refl_diffbir.yml --force_yml ...
    python benchmarks/rss_trace.py --smoke     # seconds: traces a script that holds 64 MiB (the test suite's run)

Marks: each ``Restorer.restore`` call (enter / leave), every ``backward``, every optimiser step (pre / post), every
FRM ``similarity`` call and the FRM preference step, model construction and checkpoint saving. A background thread
samples ``/proc/self/statm`` every 20 ms, so a peak between two marks is seen even when nothing logs it. The lines
go to stderr as ``rss <mark>: now X.XX GiB, peak since last mark Y.YY GiB``; the last line is the run's peak.
``--trim`` calls ``malloc_trim(0)`` at every mark and prints the RSS after it too: the difference is what the allocator
kept. This is the CPU picture (RSS includes the allocator's retained pages and the libraries); the GPU picture is
``benchmarks/memory_budget.py``.
"""
from __future__ import annotations

import functools
import os
import os.path as osp
import runpy
import sys
import threading
import time

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from drward.utils.host_memory import release_host_memory  # noqa: E402

GIB = 2 ** 30
PAGE = os.sysconf('SC_PAGE_SIZE')


class RSSSampler:
    """Samples this process's RSS in a daemon thread; :meth:`mark` prints the current value and the peak since the
    previous mark."""

    def __init__(self, interval_s: float = 0.02, trim: bool = False):
        self.interval_s, self.trim = interval_s, trim
        self.peak = self.window_peak = self.read()
        self.started = time.time()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def read() -> int:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * PAGE

    def _run(self) -> None:
        while True:
            value = self.read()
            self.window_peak = max(self.window_peak, value)
            self.peak = max(self.peak, value)
            time.sleep(self.interval_s)

    def mark(self, label: str) -> None:
        now = self.read()
        peak = max(self.window_peak, now)
        self.peak = max(self.peak, peak)
        trimmed = ''
        if self.trim:
            release_host_memory()
            now = self.read()
            trimmed = f', after malloc_trim {now / GIB:6.2f} GiB'
        print(f'rss {time.time() - self.started:8.1f}s {label:<34}: now {now / GIB:6.2f} GiB, peak since last mark '
              f'{peak / GIB:6.2f} GiB{trimmed}', file=sys.stderr, flush=True)
        self.window_peak = now


def _wrap(owner, name: str, sampler: RSSSampler, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        sampler.mark(f'{label} >')
        result = original(*args, **kwargs)
        sampler.mark(f'{label} <')
        return result
    setattr(owner, name, wrapper)


def install(sampler: RSSSampler) -> None:
    """Wrap the step's boundaries (imports drward's models; call before the tool runs)."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    from drward.archs.diffbir_arch import DiffBIRRestorer
    from drward.archs.frm_arch import FaceRewardModel
    from drward.archs.osediff_arch import OSEDiffRestorer
    from drward.models import frm_optim, refl_model
    for cls in (DiffBIRRestorer, OSEDiffRestorer):
        _wrap(cls, 'restore', sampler, f'{cls.__name__}.restore')
    _wrap(FaceRewardModel, 'similarity', sampler, 'FRM.similarity')
    _wrap(torch.Tensor, 'backward', sampler, 'backward')
    _wrap(frm_optim, 'preference_step', sampler, 'FRM preference_step')
    _wrap(refl_model.ReFLModel, '__init__', sampler, 'ReFLModel.__init__')
    _wrap(refl_model.ReFLModel, 'save', sampler, 'ReFLModel.save')
    register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: sampler.mark(f'{type(opt).__name__}.step > ({_numel(opt) / 1e6:.0f} M)'))
    register_optimizer_step_post_hook(
        lambda opt, args, kwargs: sampler.mark(f'{type(opt).__name__}.step <'))


def _numel(optimizer) -> int:
    return sum(p.numel() for group in optimizer.param_groups for p in group['params'])


SMOKE_SCRIPT = 'import numpy\nheld = numpy.ones(2 ** 23)\nprint("held", held.nbytes >> 20, "MiB")\n'


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == '--smoke':  # a script that holds 64 MiB, traced like a tool
        import tempfile
        folder = tempfile.mkdtemp(prefix='drward_smoke_')
        with open(osp.join(folder, 'hold.py'), 'w') as handle:
            handle.write(SMOKE_SCRIPT)
        sys.argv[1:] = [osp.join(folder, 'hold.py')]
    trim = sys.argv[1] == '--trim'
    if trim:
        del sys.argv[1]
    tool = sys.argv[1]
    sampler = RSSSampler(trim=trim)
    install(sampler)
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(tool, run_name='__main__')
    finally:
        sampler.mark('end')
        print(f'rss peak of the run: {sampler.peak / GIB:.2f} GiB', file=sys.stderr, flush=True)


if __name__ == '__main__':
    main()
