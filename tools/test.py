"""Test with BasicSR's own pipeline and drward's registered components.

    python tools/test.py -opt options/test_celeba.yml
    torchrun --nproc_per_node 8 tools/test.py -opt options/test_celeba.yml --launcher pytorch   # split over 8 GPUs

Runs from the repo root; results land in ``results/<name>/``. Under ``--launcher`` (pytorch or slurm) every test set
is split over the processes and rank 0 writes the one-process table (docs/evaluation.md).
"""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.models.cli import prepare_basicsr_run  # noqa: E402
from drward.utils import distributed  # noqa: E402

if __name__ == '__main__':
    prepare_basicsr_run(ROOT, sys.argv, outputs='results')
    from basicsr.test import test_pipeline
    test_pipeline(ROOT)
    distributed.finish()  # leave the process group before the interpreter exits (torchrun runs)
