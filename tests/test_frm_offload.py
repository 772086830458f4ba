"""train.frm_update.offload: the FRM's AdamW states live in host memory between dynamic updates and come back for
the update; the copies are exact, so the FRM ends bit-identical to a run without offloading (same kernels, same
inputs), and a run saved and resumed with offloading continues exactly as the uninterrupted one."""
import torch
import toy_restorer  # noqa: F401  (registers ToyRestorer)
from basicsr.models import build_model
from test_refl_model import batch, make_opt

from drward.models.state_offload import state_devices
from drward.utils.safe_load import load_training_state


def _offload_opt(tmp_path, offload: bool):
    opt = make_opt(tmp_path)
    opt['train']['frm_update'] = {'every': 3, 'offload': offload, 'optim': {'lr': 1e-4, 'weight_decay': 0.35}}
    return opt


def _train(model, iters):
    for it in iters:
        model.feed_data(batch())
        model.optimize_parameters(it)


def _build(opt):
    torch.manual_seed(0)
    return build_model(opt)


def test_offloaded_frm_states_round_trip_exactly_and_live_on_the_host_between_updates(tmp_path):
    plain, offloaded = (_build(_offload_opt(tmp_path / str(o), o)) for o in (False, True))
    for model in (plain, offloaded):
        _train(model, range(1, 7))  # FRM updates at 3 and 6
    assert offloaded.frm_update.offload.offloaded and offloaded.frm_update.offload.host_bytes() > 0
    assert not plain.frm_update.offload.offloaded
    assert set(state_devices(offloaded.optimizer_frm)) == {'cpu'}
    for key, value in plain.frm.state_dict().items():
        assert torch.equal(offloaded.frm.state_dict()[key], value), key
    assert set(state_devices(offloaded.optimizer_g)) == {'cpu'} and not offloaded.frm_update.idle[0].offloaded
    for o_plain, o_off in zip(plain.optimizers, offloaded.optimizers):  # FRM's: offloaded; generator's: swapped out
        s_plain, s_off = o_plain.state_dict()['state'], o_off.state_dict()['state']
        assert s_plain.keys() == s_off.keys() and s_plain
        for k in s_plain:
            for name in ('exp_avg', 'exp_avg_sq', 'step'):
                assert torch.equal(s_plain[k][name], s_off[k][name])


def test_resume_with_offloaded_frm_states_continues_bit_identically(tmp_path):
    whole = _build(_offload_opt(tmp_path / 'whole', True))
    _train(whole, range(1, 7))
    first = _build(_offload_opt(tmp_path / 'cut', True))
    _train(first, range(1, 4))
    first.save(0, 3)
    opt = _offload_opt(tmp_path / 'cut', True)
    opt['path']['resume_state'] = str(tmp_path / 'cut' / 'training_states' / '3.state')
    opt['path']['pretrain_network_g'] = str(tmp_path / 'cut' / 'models' / 'net_g_3.pth')
    resumed = _build(opt)
    resumed.resume_training(load_training_state(opt['path']['resume_state']))
    assert resumed.frm_update.offload.offloaded  # the loaded states went straight back to host memory
    _train(resumed, range(4, 7))
    for key, value in whole.frm.state_dict().items():
        assert torch.equal(resumed.frm.state_dict()[key], value), key
    for key, value in whole.net_g.trained_state_dict().items():
        assert torch.equal(resumed.net_g.trained_state_dict()[key], value), key
