"""benchmarks/rehearsal.py without running its 40-minute jobs: every job's command line parses through BasicSR's own
``parse_options`` (its ``--force_yml`` keys exist, its runs land under the workdir), and a job that would not fit on
the disk fails up front with a clear line instead of dying mid-checkpoint."""
import os.path as osp
import random
import sys

import numpy as np
import pytest
import torch

from benchmarks import rehearsal

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))


def _jobs(workdir):
    names = ('sd', 'diffbir', 'swinir', 'osediff', 'frm', 'vgg16')
    weights = {key: osp.join(workdir, 'weights', key) for key in names}
    data = {key: osp.join(workdir, 'datasets', key) for key in ('train', 'val', 'test_gt', 'test_lq', 'frm')}
    data['pairs'] = osp.join(data['frm'], 'pairs.jsonl')
    return rehearsal.jobs(weights, data, 'cpu', workdir)


def _parsed(job, monkeypatch):
    """``parse_options`` seeds random, numpy and torch: their states are put back for the tests that follow."""
    from basicsr.utils.options import parse_options
    argv = [f'tools/{job.tool}.py', '-opt', osp.join(ROOT, job.option_file), '--force_yml', *job.overrides]
    monkeypatch.setattr(sys, 'argv', argv)
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        opt, _ = parse_options(ROOT, is_train=job.tool == 'train')
    random.setstate(states[0])
    np.random.set_state(states[1])
    return opt


@pytest.mark.parametrize('name', ['refl_diffbir', 'refl_osediff', 'train_frm', 'test_celeba', 'test_celeba_osediff'])
def test_each_job_parses_as_basicsr_would_and_writes_under_the_workdir(name, tmp_path, monkeypatch):
    job = next(j for j in _jobs(str(tmp_path)) if j.name == name)
    opt = _parsed(job, monkeypatch)
    assert opt['name'] == f'rehearsal_{name}'
    root = opt['path']['experiments_root' if job.tool == 'train' else 'results_root']
    assert root.startswith(str(tmp_path)), root  # never under the checkout
    assert opt['num_gpu'] == 0
    if name.startswith('refl_'):  # what the issue keeps as in the real file: K = 50, N = 1, auto precision
        assert opt['network_g']['weight_dtype'] == 'auto' and opt['train']['grad_steps'] == 1
        assert opt['train']['total_iter'] == 1 and opt['train']['frm_update']['every'] == 1


def test_a_job_that_does_not_fit_on_the_disk_is_refused_before_it_starts(tmp_path, monkeypatch):
    job = next(j for j in _jobs(str(tmp_path)) if j.name == 'refl_diffbir')
    monkeypatch.setattr(rehearsal, 'free_gib', lambda folder: 2.0)
    spawned = []
    monkeypatch.setattr(rehearsal.subprocess, 'Popen', lambda *a, **k: spawned.append(a))
    result = rehearsal.run_job(job, str(tmp_path), str(tmp_path))
    assert not result['ok'] and not spawned
    assert '2.0 GiB free' in result['tail'] and f'{job.disk_gib:.0f} GiB' in result['tail']
