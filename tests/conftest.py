"""Shared pytest set-up: offline, deterministic, CPU."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # test helpers (toy_restorer, ...) import by name

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import logging  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from tolerances import THREAD_COUNTS  # noqa: E402

import drward  # noqa: E402,F401  (registers everything once)


@pytest.fixture
def one_thread():
    """Tiny models run fastest single-threaded on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=THREAD_COUNTS, ids=lambda n: f'{n}threads')
def num_threads(request):
    """Run a float-sensitive comparison at 1 and at 2 threads (``tolerances.THREAD_COUNTS``): a tolerance that
    holds at one thread count only fails here, not on another machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope='session')
def browser():
    """Headless Chromium (the system's, see browser_helpers) through Playwright; skips with the reason if absent."""
    from browser_helpers import chromium_executable, why_no_browser
    reason = why_no_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_executable(), args=['--no-sandbox'])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def basicsr_warnings(caplog):
    """caplog for BasicSR's logger, which does not propagate to the root logger."""
    logger = logging.getLogger('basicsr')
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger='basicsr'):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def pytest_configure(config):
    for line in ('ignore::DeprecationWarning', 'ignore::UserWarning', 'ignore::FutureWarning'):
        config.addinivalue_line('filterwarnings', line)
    config.addinivalue_line('markers', 'heavy: a whole training or page run (tens of seconds on a slow CPU); '
                                       'scheduled first so that the test workers finish together')
    _share_cores_between_workers()


def _share_cores_between_workers() -> None:
    """Under pytest-xdist (``tools/run.sh test`` runs ``-n auto``) each worker gets ``cores // workers`` intra-op
    threads, and so do the processes its tests start (``OMP_NUM_THREADS``): two workers on two cores run one thread
    each instead of four threads fighting for two cores."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '0') or 0)
    if workers < 2:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = str(threads)
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """The ``heavy`` tests first (a stable sort): a worker that draws a long run at the end would otherwise leave
    the other one idle while it finishes."""
    items.sort(key=lambda item: item.get_closest_marker('heavy') is None)
