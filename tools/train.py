"""Train with BasicSR's own pipeline and drward's registered components.

    python tools/train.py -opt options/refl_diffbir.yml [--auto_resume] [--debug] [--launcher pytorch]

Runs from the repo root (relative paths in option files are relative to it); experiments land in
``experiments/<name>/`` and ``tb_logger/<name>/``, as in any BasicSR project.
"""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.models.cli import prepare_basicsr_run  # noqa: E402
from drward.utils import distributed  # noqa: E402

if __name__ == '__main__':
    prepare_basicsr_run(ROOT, sys.argv, outputs='experiments')
    from basicsr.train import train_pipeline
    train_pipeline(ROOT)
    distributed.finish()  # leave the process group before the interpreter exits (torchrun runs)
