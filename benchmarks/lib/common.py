"""Measuring tools shared by the benchmarks: a clock that splits wall time into named parts, memory probes, tables.

:class:`PartClock` partitions the wall time of one measured run into consecutive intervals, each attributed to the
part that was *current* when it began: ``switch(part)`` closes the running interval and opens the next. Parts can
recur (the no-grad prefix is K − N separate calls); their intervals add up. On CUDA every switch synchronises the
device first, so an interval holds the kernels launched in it, not just their launch. The parts therefore sum to the
run's wall time exactly (the instrumentation's own overhead lands in the parts, and is small: a clock read and, on
CUDA, a synchronise per switch).

Two memory measures per part:

* **saved for backward** (:class:`SavedTensorMeter`): the bytes of the tensors autograd keeps for the backward pass,
  counted exactly by a ``torch.autograd.graph.saved_tensors_hooks`` pack hook while the part runs (each storage
  once; parameters and buffers excluded: they exist anyway). The same on every device; this is the memory that
  truncating the chain saves. Inside gradient-checkpointed regions checkpointing's own hooks take over: what such a
  region keeps is its inputs, which the instrumentation counts at the checkpoint call (its recomputation in the
  backward, one region at a time, is transient and shows in the backward time).
* **peak**: the peak *above the level at the start of the run* (weights and optimiser states excluded):

  - CUDA: ``torch.cuda.max_memory_allocated`` (tensors held by PyTorch's caching allocator), reset at every switch;
  - CPU: the process's resident set size (RSS), sampled every ``interval_s`` by a background thread (psutil when
    installed, else ``/proc/self/statm``). tracemalloc cannot see torch's allocations; RSS can, but the C allocator
    reuses freed blocks (a part can show 0) and a peak shorter than the sampling interval can be missed: on the CPU
    read the saved-for-backward figure first.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

MIB = 2 ** 20


def _rss_reader():
    """A function returning the current RSS in bytes (psutil if installed, else ``/proc/self/statm``)."""
    try:
        import psutil
        process = psutil.Process()
        return lambda: process.memory_info().rss
    except ImportError:  # pragma: no cover - psutil is present in the pinned stack
        page = os.sysconf('SC_PAGE_SIZE')

        def read() -> int:
            with open('/proc/self/statm') as statm:
                return int(statm.read().split()[1]) * page
        return read


class CudaMemoryProbe:
    """Peak CUDA memory allocated by PyTorch tensors between two :meth:`take_peak` calls."""

    description = 'CUDA peak allocated (torch.cuda.max_memory_allocated) above the step start'

    def __init__(self, device: torch.device):
        self.device = device

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def level(self) -> int:
        """Bytes allocated now."""
        return torch.cuda.memory_allocated(self.device)

    def take_peak(self) -> int:
        """The peak since the previous call (or since :meth:`level` was last reset), then reset it."""
        peak = torch.cuda.max_memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return peak

    def close(self) -> None:
        pass


class RssMemoryProbe:
    """Peak resident set size between two :meth:`take_peak` calls, sampled by a daemon thread."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.description = (f'CPU peak RSS (sampled every {interval_s * 1e3:g} ms) above the step start; the C '
                            f'allocator reuses freed memory, so on the CPU a part (even a step) can read 0: trust '
                            f'*saved* there')
        self._read = _rss_reader()
        self._lock = threading.Lock()
        self._peak = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name='rss-probe', daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self._read()
            with self._lock:
                self._peak = max(self._peak, rss)

    def synchronize(self) -> None:
        pass

    def level(self) -> int:
        return self._read()

    def take_peak(self) -> int:
        rss = self._read()
        with self._lock:
            peak, self._peak = max(self._peak, rss), rss
        return peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def memory_probe(device: torch.device, rss_interval_s: float = 0.001):
    """The probe that fits ``device``: :class:`CudaMemoryProbe` on CUDA, :class:`RssMemoryProbe` otherwise."""
    return CudaMemoryProbe(device) if device.type == 'cuda' else RssMemoryProbe(rss_interval_s)


class SavedTensorMeter:
    """Bytes that autograd saves for backward, counted by a pack hook between :meth:`begin` and :meth:`end`.

    A storage is counted once while any tensor saved from it is alive (a weak reference to the first saved tensor
    tells), so a storage saved by several operations counts once, and an address reused after the graph was freed
    counts again. Storages of the ``exclude`` tensors (model parameters and buffers) are never counted.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: Dict[int, weakref.ref] = {}
        self._bytes = 0
        self._hooks = None

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.count(tensor)
        return tensor

    def count(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage as kept for backward (once; parameters and buffers never). The pack hook calls
        it; :func:`benchmarks.lib.step_parts.instrument` also calls it for the inputs a non-reentrant activation
        checkpoint keeps alive itself (its own hooks replace this meter's inside the checkpointed region)."""
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without a storage (subclasses, nested, ...)
            return
        ptr = storage.data_ptr()
        if ptr and ptr not in self._exclude:
            first = self._seen.get(ptr)
            if first is None or first() is None:
                self._seen[ptr] = weakref.ref(tensor)
                self._bytes += storage.nbytes()

    def begin(self) -> None:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        self._bytes = 0

    def take(self) -> int:
        """Bytes counted since the previous call."""
        counted, self._bytes = self._bytes, 0
        return counted

    def end(self) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None
        self._seen.clear()


@dataclass
class PartMeasure:
    """What one part took in one run: wall ``seconds`` (summed over its intervals), ``peak_bytes``, the highest
    memory level seen in any of its intervals above the run's starting level (0 if it never rose above it), and
    ``saved_bytes``, what its operations saved for backward."""

    seconds: float = 0.0
    peak_bytes: int = 0
    saved_bytes: int = 0


class PartClock:
    """Splits one run's wall time into parts (see the module docstring). Use ``start(part)``, ``switch(part)`` any
    number of times, then ``stop()``; :attr:`parts` holds the measures and :attr:`total_seconds` their sum.
    ``probe``: a memory probe (:func:`memory_probe`); ``meter``: an optional :class:`SavedTensorMeter`; ``timer``:
    the clock read at every boundary (default ``time.perf_counter``, wall time; ``time.thread_time`` counts only
    this thread's CPU time, steadier on a shared CPU when torch runs single-threaded)."""

    def __init__(self, probe, meter: Optional[SavedTensorMeter] = None, timer: Optional[Callable[[], float]] = None):
        self.probe = probe
        self.meter = meter
        self._timer = timer or time.perf_counter
        self.parts: Dict[str, PartMeasure] = {}
        self._current: Optional[str] = None
        self._since = self._run_start = 0.0
        self._base = 0
        self.total_seconds = 0.0

    @property
    def current(self) -> Optional[str]:
        """The part running now (None outside a run)."""
        return self._current

    def start(self, part: str) -> None:
        self.probe.synchronize()
        self.parts = {}
        self._base = self.probe.level()
        self.probe.take_peak()
        if self.meter is not None:
            self.meter.begin()
        self._current, self._since = part, self._timer()
        self._run_start = self._since

    def switch(self, part: str) -> None:
        """Close the running interval (attributed to the current part) and open one for ``part``."""
        if self._current is None:
            return
        self._close()
        self._current = part

    def stop(self) -> None:
        if self._current is None:
            return
        self._close()
        self.total_seconds = self._since - self._run_start
        self._current = None
        if self.meter is not None:
            self.meter.end()

    def _close(self) -> None:
        self.probe.synchronize()
        now = self._timer()
        measure = self.parts.setdefault(self._current, PartMeasure())
        measure.seconds += now - self._since
        measure.peak_bytes = max(measure.peak_bytes, self.probe.take_peak() - self._base)
        if self.meter is not None:
            measure.saved_bytes += self.meter.take()
        self._since = now

    @property
    def start_bytes(self) -> int:
        """The memory level at the start of the run (the probe's :meth:`level`)."""
        return self._base

    @property
    def peak_bytes(self) -> int:
        """The run's peak above its starting level (the largest part peak)."""
        return max((m.peak_bytes for m in self.parts.values()), default=0)


def median_measures(runs: Sequence[Dict[str, PartMeasure]]) -> Dict[str, PartMeasure]:
    """Per part, the median of each measure over repeated runs (a part missing from a run counts 0)."""
    names: List[str] = []
    for run in runs:
        names += [name for name in run if name not in names]
    empty = PartMeasure()

    def median(name: str, attribute: str) -> float:
        return statistics.median(getattr(run.get(name, empty), attribute) for run in runs)
    return {name: PartMeasure(median(name, 'seconds'), int(median(name, 'peak_bytes')),
                              int(median(name, 'saved_bytes'))) for name in names}


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: Optional[str] = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` one character per column, ``l`` or ``r`` (default: first
    column left, the rest right)."""
    align = align or 'l' + 'r' * (len(headers) - 1)
    rule = ['---:' if a == 'r' else ':---' for a in align]
    lines = ['| ' + ' | '.join(headers) + ' |', '| ' + ' | '.join(rule) + ' |']
    lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
    return '\n'.join(lines)


def fmt_ms(seconds: float) -> str:
    return f'{seconds * 1e3:,.1f}'


def fmt_mib(num_bytes: int) -> str:
    return f'{num_bytes / MIB:,.1f}'


def fmt_ratio(numerator: float, denominator: float) -> str:
    return f'{numerator / denominator:.3f}' if denominator > 0 else 'n/a'


def emit_report(report: str, out: Optional[str]) -> str:
    """Print a Markdown report, also write it to ``out`` when given; return it."""
    print(report)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, 'w') as handle:
            handle.write(report)
    return report
