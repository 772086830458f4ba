"""drward never breaks a host BasicSR project's registries (drward.utils.registry): importing it after BasicSR,
CodeFormer's BasicSR fork, GFPGAN and Real-ESRGAN registered their names works, and every drward component still
builds from its option name."""
import json
import os
import re
import subprocess
import sys
import warnings

import pytest
from basicsr.utils.registry import LOSS_REGISTRY, Registry
from option_files import ROOT
from torch import nn

from drward.utils.registry import HOST_NAMES, base_name, drward_name, register_object

# Runs in a fresh interpreter: import GFPGAN if installed, register every other host name (a dummy class each, as the
# host's import would; names our BasicSR already holds keep BasicSR's class), then import drward, then build every
# drward loss/arch/model named in the tiny option files from its option name. Prints one JSON line.
HOST_FIRST_SCRIPT = r'''
import copy, glob, importlib.util, json, os, pathlib, sys, warnings
root, tmp = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(root, 'tests'))
spec = importlib.util.spec_from_file_location('host_names', os.path.join(root, 'drward', 'utils', 'registry.py'))
hosts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hosts)  # the host-name table only: the drward package is not imported yet
from basicsr.utils import registry as bsr
try:
    import gfpgan  # the real host where it is installed (its names then need no dummies)
except ImportError:
    pass
registries = {'arch': bsr.ARCH_REGISTRY, 'dataset': bsr.DATASET_REGISTRY, 'loss': bsr.LOSS_REGISTRY,
              'metric': bsr.METRIC_REGISTRY, 'model': bsr.MODEL_REGISTRY}
for kind, names in hosts.HOST_NAMES.items():
    for name in sorted(names - set(registries[kind].keys())):
        registries[kind].register(type(name, (), {'__module__': 'host_project'}))
host_objects = {kind: {n: registries[kind].get(n) for n in names} for kind, names in hosts.HOST_NAMES.items()}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    import drward
ours = {kind: sorted(n for n, obj in reg if obj.__module__.startswith('drward.')) for kind, reg in registries.items()}
intact = all(registries[kind].get(n) is obj for kind, objs in host_objects.items() for n, obj in objs.items())

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import build_model
from option_files import load_option_file

def typed_dicts(node):
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield node
        for value in node.values():
            yield from typed_dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from typed_dicts(value)

built = {'arch': [], 'loss': [], 'model': []}
builders = {'arch': build_network, 'loss': build_loss}
for path in sorted(glob.glob(os.path.join(root, 'options', '*_tiny.yml'))):
    opt = load_option_file(os.path.basename(path), pathlib.Path(tmp))
    opt['num_gpu'] = 0
    for node in typed_dicts(opt):
        for kind, build in builders.items():
            if node['type'] in ours[kind] and node['type'] not in built[kind]:
                build(copy.deepcopy(node))
                built[kind].append(node['type'])
    if opt.get('model_type') in ours['model'] and opt['model_type'] not in built['model']:
        build_model(opt)
        built['model'].append(opt['model_type'])
print(json.dumps({'ours': ours, 'intact': intact, 'built': built,
                  'warnings': [str(w.message) for w in caught if 'drward' in str(w.message)]}))
'''


@pytest.fixture(scope='module')
def host_first(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('hosts')
    proc = subprocess.run([sys.executable, '-c', HOST_FIRST_SCRIPT, ROOT, str(tmp)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_after_every_host_name_is_registered_keeps_the_hosts_objects(host_first):
    assert host_first['intact'], 'a host name now resolves to something else after importing drward'
    for kind, names in host_first['ours'].items():
        assert names, f'drward registered nothing in the {kind} registry'
        assert not set(names) & HOST_NAMES[kind], kind
    # host names are avoided by rule, not by the step-aside fallback: no warning
    assert host_first['warnings'] == []


def test_every_drward_loss_arch_and_model_builds_from_its_option_name_after_the_hosts(host_first):
    for kind in ('arch', 'loss', 'model'):
        unbuilt = sorted(set(host_first['ours'][kind]) - set(host_first['built'][kind]))
        assert not unbuilt, f'drward {kind}(s) {unbuilt} are named in no options/*_tiny.yml, so nothing built them'
    assert 'LPIPSLoss_drward' in host_first['ours']['loss'] and 'LPIPSLoss' not in host_first['ours']['loss']


class Borrowed(nn.Module):
    """Stands for another project's class under a name drward uses."""


def test_a_name_taken_before_drward_keeps_the_hosts_object_and_drwards_gets_the_alias():
    registry = Registry('loss')
    host = type('RewardLoss', (Borrowed,), {})
    registry.register(host)
    ours = type('RewardLoss', (nn.Module,), {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        name = register_object(registry, ours)
    assert name == drward_name('RewardLoss') == 'RewardLoss_drward'
    assert registry.get('RewardLoss') is host and registry.get('RewardLoss_drward') is ours
    assert len(caught) == 1 and "`type: RewardLoss_drward`" in str(caught[0].message)


def test_a_host_name_is_never_taken_even_when_free():
    registry = Registry('loss')
    ours = type('LPIPSLoss', (nn.Module,), {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert register_object(registry, ours) == 'LPIPSLoss_drward'
    assert 'LPIPSLoss' not in registry and caught == []
    registry.register(type('LPIPSLoss', (Borrowed,), {}))  # the host imported afterwards still registers
    assert base_name('LPIPSLoss_drward') == 'LPIPSLoss'


def test_in_this_environment_lpips_loss_option_name_is_drwards():
    assert LOSS_REGISTRY.get('LPIPSLoss_drward').__module__ == 'drward.losses.lpips_loss'
    assert 'LPIPSLoss' not in LOSS_REGISTRY


DIRECT_REGISTRATION = re.compile(r'\s*@?\w+_REGISTRY\.register\(')  # code lines only, not docstrings mentioning it


def test_every_drward_registration_goes_through_drward_utils_registry():
    direct = []
    for folder, _, files in os.walk(os.path.join(ROOT, 'drward')):
        for name in files:
            if name.endswith('.py'):
                with open(os.path.join(folder, name)) as f:
                    direct += [f'{name}:{i}' for i, line in enumerate(f, 1) if DIRECT_REGISTRATION.match(line)]
    assert not direct, f'register with drward.utils.registry.register(REGISTRY), not REGISTRY.register(): {direct}'
