"""What ``tools/train.py`` and ``tools/test.py`` do before handing over to BasicSR's pipelines."""
from __future__ import annotations

import os
import sys
from typing import List


def prepare_basicsr_run(root: str, argv: List[str]) -> None:
    """Resolve ``-opt`` against the caller's folder, move to the repo root, stop early on missing weight files,
    register drward's components and make BasicSR's resume work on the CPU."""
    if '-opt' in argv:
        i = argv.index('-opt') + 1
        if i < len(argv):
            argv[i] = os.path.abspath(argv[i])
    os.chdir(root)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from drward.utils.options import check_weights_before_run
    check_weights_before_run(argv)
    import drward  # noqa: F401  (registers archs, losses, datasets, metrics, models)
    from drward.utils import basicsr_compat
    basicsr_compat.install()
    sys.argv = argv
