"""Test with BasicSR's own pipeline and drward's registered components.

    python tools/test.py -opt options/test_celeba.yml

Results land in ``results/<name>/`` under the repo root.
"""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

import drward  # noqa: E402,F401  (registers archs, losses, datasets, metrics, models)
from drward.utils.options import check_weights_before_run  # noqa: E402
from basicsr.test import test_pipeline  # noqa: E402

if __name__ == '__main__':
    check_weights_before_run(sys.argv)
    test_pipeline(ROOT)
