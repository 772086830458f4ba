"""ReFLModel with a toy restorer: the loss, what is trained, the FRM schedule, NaN skips, checkpoints."""
import os

import pytest
import torch
import toy_restorer  # noqa: F401  (registers ToyRestorer)
from basicsr.models import build_model
from safetensors.torch import load_file

from drward.utils.safe_load import load_training_state


def make_opt(tmp_path, **train):
    models = tmp_path / 'models'
    opt = {
        'name': 'toy_refl', 'model_type': 'ReFLModel', 'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1,
        'num_gpu': 0, 'manual_seed': 0,
        'network_g': {'type': 'ToyRestorer', 'num_steps': 6},
        'path': {'models': str(models), 'training_states': str(tmp_path / 'training_states'),
                 'visualization': str(tmp_path / 'visualization'), 'log': str(tmp_path), 'resume_state': None,
                 'pretrain_network_g': None},
        'train': {
            'grad_accum': 2, 'grad_steps': 1,
            'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.01},
            'reward_opt': {'type': 'RewardLoss', 'loss_weight': 0.005, 'frm': {'model_name': 'tiny'}},
            'dwt_opt': {'type': 'DWTLoss', 'loss_weight': 0.01},
            'reg_opt': {'type': 'RegLoss', 'loss_weight': 1e-4},
            'frm_update': {'every': 3, 'optim': {'lr': 1e-4, 'weight_decay': 0.35}},
            **train,
        },
    }
    os.makedirs(models, exist_ok=True)
    os.makedirs(tmp_path / 'training_states', exist_ok=True)
    return opt


def batch(n=2, size=32):
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(n, 3, size, size, generator=g)
    return {'lq': (gt + 0.2 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1), 'gt': gt,
            'caption': [f'face {i}' for i in range(n)]}


@pytest.fixture
def model(tmp_path):
    return build_model(make_opt(tmp_path))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def test_total_loss_is_the_sum_of_the_logged_weighted_terms(model):
    model.feed_data(batch())
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert {'l_reg', 'l_dwt', 'l_reward', 'l_total', 'reward_restored', 'reward_gt', 'stop_timestep',
            'hack_reward_gap', 'hack_hf_ratio'} <= set(log)
    # the total is a float32 tensor sum, the terms are logged as Python floats: rounding of the sum only
    assert log['l_total'] == pytest.approx(log['l_reg'] + log['l_dwt'] + log['l_reward'], rel=1e-5)


def test_reg_loss_is_zero_at_the_first_step(model):
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert model.get_current_log()['l_reg'] == 0.0


def test_generator_step_updates_exactly_the_trained_parameters(model):
    net = model.net_g
    before_net, before_frm = snapshot(net), snapshot(model.frm)
    model.feed_data(batch())
    model.optimize_parameters(1)  # 1 % 3 != 0: no FRM update
    assert changed(before_net, net) == {'control.weight', 'control.bias'}
    assert changed(before_frm, model.frm) == set()


def test_frm_steps_exactly_every_n_iterations(model):
    updates = []
    for it in range(1, 10):
        before = snapshot(model.frm)
        model.feed_data(batch())
        model.optimize_parameters(it)
        updates.append(bool(changed(before, model.frm)))
        assert ('frm_acc' in model.get_current_log()) == (it % 3 == 0)
    assert updates == [it % 3 == 0 for it in range(1, 10)]
    assert model.frm_update.updates == 3


def test_frm_update_trains_only_its_unlocked_parameters(model):
    trainable = {n for n, p in model.frm.named_parameters() if p.requires_grad}
    before = snapshot(model.frm)
    model.feed_data(batch())
    model.optimize_parameters(3)
    moved = {k for k in changed(before, model.frm)}
    assert moved and moved <= trainable


def test_micro_batches_accumulate_into_one_optimizer_step(tmp_path):
    """grad_accum=2 runs two micro-batches (one gradient-enabled denoiser call each) and one optimizer step."""
    torch.manual_seed(0)
    a = build_model(make_opt(tmp_path / 'a', grad_accum=2, grad_steps=1))
    torch.manual_seed(0)
    b = build_model(make_opt(tmp_path / 'b', grad_accum=1, grad_steps=1))
    b.net_g.load_state_dict(a.net_g.state_dict())
    calls = []
    for m in (a, b):
        m.feed_data(batch())
        m.optimize_parameters(1)
        calls.append(m.net_g.denoiser_calls_with_grad)
    assert calls == [2, 1]  # N=1 per micro-batch: a ran two micro-batches
    for m in (a, b):
        assert [s['step'].item() for s in m.optimizer_g.state.values()] == [1.0, 1.0]


def test_non_finite_loss_skips_the_step_and_logs(model, caplog):
    before = snapshot(model.net_g)
    data = batch()
    model.feed_data(data)
    model.gt = torch.full_like(model.gt, float('nan'))
    model.optimize_parameters(1)
    assert model.skipped_steps == 1
    assert changed(before, model.net_g) == set()
    assert model.get_current_log() == {'skipped_steps': 1.0}


def test_save_writes_trained_part_frm_and_both_optimizers(model, tmp_path):
    model.feed_data(batch())
    model.optimize_parameters(3)
    model.save(0, 3)
    g = load_file(tmp_path / 'models' / 'net_g_3.safetensors')
    assert set(g) == {'weight', 'bias'}  # the trained part only, as .safetensors
    frm = torch.load(tmp_path / 'models' / 'net_frm_3.pth', weights_only=True)
    assert 'state_dict' in frm and 'logit_scale' in frm['state_dict']
    state = load_training_state(tmp_path / 'training_states' / '3.state')
    assert len(state['optimizers']) == 2


def test_resume_restores_restorer_frm_and_optimizers(model, tmp_path):
    for it in (1, 2, 3):
        model.feed_data(batch())
        model.optimize_parameters(it)
    model.save(0, 3)
    opt = make_opt(tmp_path)
    opt['path']['resume_state'] = str(tmp_path / 'training_states' / '3.state')
    # BasicSR's resume name: the net_g_3.safetensors that drward wrote beside it is what loads
    opt['path']['pretrain_network_g'] = str(tmp_path / 'models' / 'net_g_3.pth')
    resumed = build_model(opt)
    resumed.resume_training(load_training_state(opt['path']['resume_state']))
    for key, value in model.frm.state_dict().items():
        assert torch.equal(resumed.frm.state_dict()[key], value), key
    for key, value in model.net_g.trained_state_dict().items():
        assert torch.equal(resumed.net_g.trained_state_dict()[key], value), key
    for o_old, o_new in zip(model.optimizers, resumed.optimizers):
        s_old, s_new = o_old.state_dict()['state'], o_new.state_dict()['state']
        assert s_old.keys() == s_new.keys() and s_old
        for k in s_old:
            assert torch.equal(s_old[k]['exp_avg'], s_new[k]['exp_avg'])


def test_unknown_train_option_lists_accepted_keys(tmp_path):
    with pytest.raises(Exception, match='accepted keys'):
        build_model(make_opt(tmp_path, grad_acum=4))


def test_validation_saves_grids_and_logs_rewards(model, tmp_path):
    class Loader(list):
        dataset = type('D', (), {'opt': {'name': 'val'}})()
    data = batch(1)
    data['lq_path'] = ['face_0.png']
    model.opt['val'] = {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    results = model.validator.run(Loader([data]), 5, None, save_img=True)
    assert {'psnr', 'reward_restored', 'reward_gt', 'hack_reward_gap', 'hack_hf_ratio'} <= set(results)
    assert results['hack_reward_gap'] == pytest.approx(results['reward_restored'] - results['reward_gt'], abs=1e-9)
    assert (tmp_path / 'visualization' / 'val' / 'face_0_5.png').exists()


def test_bf16_autocast_and_gradient_checkpointing_train(tmp_path):
    model = build_model(make_opt(tmp_path, mixed_precision='bf16', gradient_checkpointing=True))
    before = snapshot(model.net_g)
    for it in (1, 2, 3):  # iteration 3 also runs the FRM update under checkpointing
        model.feed_data(batch())
        model.optimize_parameters(it)
    assert model.skipped_steps == 0 and 'frm_acc' in model.get_current_log()
    assert changed(before, model.net_g) == {'control.weight', 'control.bias'}


def test_fp16_without_a_gradient_scaler_is_refused(tmp_path):
    with pytest.raises(Exception, match=r"ReFLModel train: mixed_precision: got 'fp16' \(str\); accepted: one of "
                                        r"\['no', 'bf16'"):
        build_model(make_opt(tmp_path, mixed_precision='fp16'))
