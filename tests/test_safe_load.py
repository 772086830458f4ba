"""drward.utils.safe_load: no file runs code, whatever its name; real layouts and old files still load."""
import builtins
import os
import subprocess
import time

import pytest
import torch
from basicsr.models.lr_scheduler import CosineAnnealingRestartLR, MultiStepRestartLR

from drward.utils.basicsr_compat import load_resume_state
from drward.utils.options import WEIGHT_SOURCES
from drward.utils.safe_load import (
    TRAINING_STATE_GLOBALS,
    InertObject,
    UnsafeFileError,
    forced_weights_only,
    foreign_globals,
    load_training_state,
    load_weights,
)


class SystemPayload:  # os.system: torch refuses the module outright
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class EvalPayload(SystemPayload):
    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').close()",)


class ExecPayload(SystemPayload):
    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


class PopenPayload(SystemPayload):
    def __reduce__(self):
        return subprocess.Popen, (['touch', self.marker],)


class OpenPayload(SystemPayload):
    def __reduce__(self):
        return builtins.open, (self.marker, 'w')


class SetstatePayload:  # an ordinary object (pickled as class + state): its own __setstate__ writes the marker
    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state['marker'], 'w').close()


PAYLOADS = [SystemPayload, EvalPayload, ExecPayload, PopenPayload, OpenPayload, SetstatePayload]
WEIGHT_NAMES = sorted(WEIGHT_SOURCES) + ['net_g_100.pth', 'net_frm_100.pth', 'net_g_100.safetensors']


def _write(path, payload):
    torch.save({'state_dict': {'a': torch.arange(3.0)}, 'callbacks': payload, 'global_step': 7}, path)


def _marker_appears(marker, wait=0.0):
    deadline = time.time() + wait  # Popen would create it a little later
    while True:
        if marker.exists():
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.05)


@pytest.mark.parametrize('payload', PAYLOADS, ids=lambda p: p.__name__)
def test_the_payloads_are_live(tmp_path, payload):
    """Without the safe loader each payload does write its marker (so the tests below test something)."""
    marker = tmp_path / 'marker'
    _write(tmp_path / 'x.pth', payload(marker))
    torch.load(tmp_path / 'x.pth', weights_only=False)
    assert _marker_appears(marker, wait=5.0)


@pytest.mark.parametrize('name', WEIGHT_NAMES)
@pytest.mark.parametrize('payload', PAYLOADS, ids=lambda p: p.__name__)
def test_a_payload_named_like_any_weights_file_runs_nothing(tmp_path, name, payload):
    marker, path = tmp_path / 'marker', tmp_path / name
    _write(path, payload(marker))
    try:
        loaded = load_weights(str(path))
    except UnsafeFileError as error:  # refused: say which file and why, in one line
        assert str(path) in str(error) and '\n' not in str(error)
        assert payload is SystemPayload or name.endswith('.safetensors')
    else:
        assert torch.equal(loaded['state_dict']['a'], torch.arange(3.0)) and loaded['global_step'] == 7
        assert isinstance(loaded['callbacks'], InertObject)  # a record of what the file named, nothing more
    assert not _marker_appears(marker, wait=0.5 if payload is PopenPayload else 0.0)


@pytest.mark.parametrize('payload', PAYLOADS, ids=lambda p: p.__name__)
def test_a_payload_named_like_a_training_state_is_refused_before_unpickling(tmp_path, payload):
    marker = tmp_path / 'marker'
    states = tmp_path / 'experiments' / 'x' / 'training_states'
    states.mkdir(parents=True)
    torch.save({'epoch': 0, 'iter': 100, 'optimizers': [], 'schedulers': [payload(marker)]}, states / '100.state')
    with pytest.raises(UnsafeFileError, match='100.state'):
        load_training_state(str(states / '100.state'))
    opt = {'auto_resume': False, 'path': {'resume_state': str(states / '100.state')}}
    with pytest.raises(UnsafeFileError, match='refusing'):
        load_resume_state(opt)
    assert not _marker_appears(marker, wait=0.5 if payload is PopenPayload else 0.0)


class AttributeDict(dict):  # Lightning keeps hyper-parameters in a dict subclass like this one
    def __setstate__(self, state):
        open(state['marker'], 'w').close()


class History(list):
    pass


def test_dict_and_list_subclasses_of_a_checkpoint_come_out_as_plain_containers(tmp_path):
    hparams = AttributeDict(lr=1e-4, size=[1, 2])
    hparams.marker = str(tmp_path / 'marker')
    torch.save({'state_dict': {'a': torch.ones(2)}, 'hyper_parameters': hparams,
                'history': History([1, torch.zeros(2)])}, tmp_path / 'v2-1_512-ema-pruned.ckpt')
    loaded = load_weights(str(tmp_path / 'v2-1_512-ema-pruned.ckpt'))
    assert dict(loaded['hyper_parameters']) == {'lr': 1e-4, 'size': [1, 2]}
    assert loaded['history'][0] == 1 and torch.equal(loaded['history'][1], torch.zeros(2))
    assert torch.equal(loaded['state_dict']['a'], torch.ones(2)) and not (tmp_path / 'marker').exists()


def _basicsr_state(scheduler_cls, **kwargs):
    """A training state as BasicSR 1.4.2 writes it (BaseModel.save_training_state: torch.save of this dict)."""
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=1e-3, betas=(0.9, 0.98))
    scheduler = scheduler_cls(optimizer, **kwargs)
    for _ in range(3):
        param.grad = torch.full_like(param, 0.5)
        optimizer.step()
        scheduler.step()
    return {'epoch': 1, 'iter': 3, 'optimizers': [optimizer.state_dict()], 'schedulers': [scheduler.state_dict()]}


@pytest.mark.parametrize('scheduler_cls, kwargs', [
    (MultiStepRestartLR, {'milestones': [2, 5], 'gamma': 0.5}),
    (CosineAnnealingRestartLR, {'periods': [10], 'restart_weights': [1], 'eta_min': 0}),
], ids=['MultiStepRestartLR', 'CosineAnnealingRestartLR'])
def test_old_style_training_state_loads_with_its_scheduler(tmp_path, scheduler_cls, kwargs):
    state = _basicsr_state(scheduler_cls, **kwargs)
    torch.save(state, tmp_path / '3.state')
    assert set(foreign_globals(str(tmp_path / '3.state'))) <= set(TRAINING_STATE_GLOBALS)
    loaded = load_training_state(str(tmp_path / '3.state'))
    assert loaded['schedulers'] == state['schedulers']  # Counter milestones included
    assert loaded['optimizers'][0]['param_groups'] == state['optimizers'][0]['param_groups']
    assert torch.equal(loaded['optimizers'][0]['state'][0]['exp_avg'], state['optimizers'][0]['state'][0]['exp_avg'])


def test_safetensors_and_corrupt_files_fail_in_one_line(tmp_path):
    (tmp_path / 'bad.safetensors').write_bytes(b'not a safetensors file')
    (tmp_path / 'bad.pth').write_bytes(b'not a torch file')
    for name in ('bad.safetensors', 'bad.pth'):
        with pytest.raises(UnsafeFileError, match=name):
            load_weights(str(tmp_path / name))


def test_forced_weights_only_overrides_third_party_weights_only_false(tmp_path):
    marker = tmp_path / 'marker'
    _write(tmp_path / 'CLIP-IQA+_learned_prompts-603f3273.pth', EvalPayload(marker))
    with forced_weights_only(), pytest.raises(Exception, match='eval'):
        torch.load(tmp_path / 'CLIP-IQA+_learned_prompts-603f3273.pth', weights_only=False)
    assert not marker.exists()
    torch.save(torch.ones(2), tmp_path / 'plain.pth')
    with forced_weights_only():
        assert torch.equal(torch.load(tmp_path / 'plain.pth', weights_only=False), torch.ones(2))


def test_refl_state_with_a_scheduler_resumes_through_basicsr_resume_lookup(tmp_path):
    """A real ReFLModel training state (MultiStepRestartLR) names only allow-listed globals; BasicSR's resume lookup
    points at ``net_g_<iter>.pth``, and the ``.safetensors`` drward wrote there is what loads."""
    from basicsr.models import build_model
    from test_refl_model import batch, make_opt
    scheduler = {'type': 'MultiStepRestartLR', 'milestones': [2, 4], 'gamma': 0.5}
    model = build_model(make_opt(tmp_path, scheduler=scheduler))
    for it in (1, 2, 3):
        model.update_learning_rate(it, warmup_iter=-1)
        model.feed_data(batch())
        model.optimize_parameters(it)
    model.save(0, 3)
    path = str(tmp_path / 'training_states' / '3.state')
    assert set(foreign_globals(path)) <= set(TRAINING_STATE_GLOBALS)
    opt = dict(make_opt(tmp_path, scheduler=scheduler), auto_resume=False)
    opt['path']['resume_state'] = path
    state = load_resume_state(opt)
    assert opt['path']['pretrain_network_g'].endswith('net_g_3.pth')  # BasicSR's name; drward wrote .safetensors
    resumed = build_model(opt)
    resumed.resume_training(state)
    assert resumed.schedulers[0].state_dict() == model.schedulers[0].state_dict()
    for key, value in model.net_g.trained_state_dict().items():
        assert torch.equal(resumed.net_g.trained_state_dict()[key], value), key
