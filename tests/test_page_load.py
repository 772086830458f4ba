"""The restoration page under a short load (benchmarks/page_load.py --smoke, on loopback): hostile uploads each get a
message and the server keeps serving, 4 concurrent requests with a queue of 1 are each restored or told the queue
is full, RSS over a few sequential requests stays flat. Minutes on 2 CPU cores (it starts tools/app.py --tiny)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
from browser_helpers import free_port  # noqa: E402

from benchmarks import page_load  # noqa: E402


@pytest.mark.heavy
def test_the_page_under_a_short_load_answers_everyone_and_survives_hostile_files(capsys):
    code = page_load.main(['--smoke', '--port', str(free_port())])
    out = capsys.readouterr().out
    assert 'FAIL' not in out and code == 0, out
    assert '| bomb.png | message |' in out and 'declares 576.0 megapixels' in out
    assert '| no_face.png | message |' in out and 'no face found' in out
    assert '| oversized.jpg, raw HTTP upload | refused 413 | File size exceeded maximum allowed size of 2097152 ' \
           'bytes. | yes |' in out
