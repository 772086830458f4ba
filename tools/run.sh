#!/usr/bin/env bash
# One entry point that does all set-up: creates .venv/ in the repo root if missing (reuses it otherwise),
# installs drward and its pinned stack, then runs the requested job.
#   tools/run.sh demo   -> the tiny ReFL demo on the CPU (no downloads)
#   tools/run.sh test   -> the test suite
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.drward-installed"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-nodeps.txt -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r requirements.txt
  "$venv/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
py="$venv/bin/python"
job="${1:-}"; shift || true
case "$job" in
  demo) exec "$py" tools/demo.py "$@" ;;
  test)
    # The web-page tests drive a real browser (tests/browser_helpers.py): install Debian's chromium when it is
    # missing and we may (root, apt); otherwise those tests skip and -rs prints why.
    if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "tools/run.sh: installing chromium with apt for the browser tests (about 1 min)"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
        || echo "tools/run.sh: chromium could not be installed; the browser tests will skip"
    fi
    "$venv/bin/ruff" check .                          # lint and import order (pyproject.toml)
    "$venv/bin/lint-imports" --config .importlinter  # the layers and no cycles (.importlinter, docs/design.md)
    # one test worker per core, at most 4 (pytest-xdist; conftest.py gives each worker cores/workers threads and
    # starts the heavy tests first; --maxschedchunk 1 hands out one test at a time). docs/testing.md: the timings.
    exec "$py" -m pytest -q -rs -n auto --maxprocesses 4 --maxschedchunk 1 tests "$@" ;;
  *) echo "usage: tools/run.sh {demo|test} [extra args]" >&2; exit 2 ;;
esac
