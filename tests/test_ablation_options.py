"""options/ablations/: every ablation parses through BasicSR's own parse_options and differs from its parent in
exactly the keys its header names; the files are what tools/derive_ablations.py writes from the parents today."""
import os.path as osp
import random
import sys

import numpy as np
import pytest
import torch
import yaml

from drward.models.dynamic_frm import parse_every
from drward.utils.ablations import ABLATIONS, PARENTS, changed_paths, derive, derived_name

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
CASES = [(parent, ablation) for parent in PARENTS for ablation in ABLATIONS]


def _parsed(path, monkeypatch):
    """BasicSR's parse_options on ``path`` (it seeds random, numpy and torch: their states are put back)."""
    from basicsr.utils.options import parse_options
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', '-opt', path])
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        opt, _ = parse_options(ROOT, is_train=True)
    random.setstate(states[0])
    np.random.set_state(states[1])
    return opt


def _flat(tree, prefix=()):
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, prefix + (key,)).items()}
    return {prefix: tree}


def _differing(parent, child):
    flat_p, flat_c = _flat(parent), _flat(child)
    keys = {k for k in set(flat_p) | set(flat_c) if flat_p.get(k, KeyError) != flat_c.get(k, KeyError)}
    return {k for k in keys if k[0] != 'path'}  # path.* follow the name (experiments/<name>)


def _covers(paths, key):
    return any(key[:len(p)] == p for p in paths)


@pytest.mark.parametrize('parent,ablation', CASES, ids=[derived_name(p, a) for p, a in CASES])
def test_ablation_parses_and_differs_from_its_parent_in_exactly_the_stated_keys(parent, ablation, monkeypatch):
    child_path = osp.join(ROOT, 'options', 'ablations', f'{derived_name(parent, ablation)}.yml')
    base = _parsed(osp.join(ROOT, 'options', f'{parent}.yml'), monkeypatch)
    child = _parsed(child_path, monkeypatch)
    stated = changed_paths(ablation)
    differing = _differing(base, child)
    assert differing and all(_covers(stated, key) for key in differing), (differing, stated)
    assert child['name'] == derived_name(parent, ablation) and ('tiny' in child['name']) == ('tiny' in parent)
    for path, value, _ in ablation.changes:
        node = child
        for key in path:
            node = node[key]
        assert node == yaml.safe_load(value)
        if path[-1] == 'every':
            assert parse_every(node) == 0


@pytest.mark.parametrize('parent', list(PARENTS))
def test_ablation_files_are_up_to_date_with_their_parent(parent):
    text = open(osp.join(ROOT, 'options', f'{parent}.yml'), encoding='utf-8').read()
    for ablation in ABLATIONS:
        path = osp.join(ROOT, 'options', 'ablations', f'{derived_name(parent, ablation)}.yml')
        assert open(path, encoding='utf-8').read() == derive(text, parent, ablation), (
            f'{path} is out of date with options/{parent}.yml: run python tools/derive_ablations.py')


def test_frm_update_every_accepts_never_and_refuses_other_words():
    assert parse_every('never') == 0 and parse_every(10) == 10 and parse_every('10') == 10
    with pytest.raises(ValueError, match='never'):
        parse_every('sometimes')
