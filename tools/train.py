"""Train with BasicSR's own pipeline and drward's registered components.

    python tools/train.py -opt options/refl_diffbir.yml [--auto_resume] [--debug] [--launcher pytorch]

Experiments land in ``experiments/<name>/`` and ``tb_logger/<name>/`` under the repo root, as in any BasicSR project.
"""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

import drward  # noqa: E402,F401  (registers archs, losses, datasets, metrics, models)
from drward.utils.options import check_weights_before_run  # noqa: E402
from basicsr.train import train_pipeline  # noqa: E402

if __name__ == '__main__':
    check_weights_before_run(sys.argv)
    train_pipeline(ROOT)
