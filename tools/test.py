"""Test with BasicSR's own pipeline and drward's registered components.

    python tools/test.py -opt options/test_celeba.yml

Runs from the repo root; results land in ``results/<name>/``.
"""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.utils.cli import prepare_basicsr_run  # noqa: E402

if __name__ == '__main__':
    prepare_basicsr_run(ROOT, sys.argv, outputs='results')
    from basicsr.test import test_pipeline
    test_pipeline(ROOT)
