"""RewardSRModel / RewardSRGANModel: BasicSR's SR training + RewardLoss + the dynamic FRM update + the hack monitor."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from basicsr.models import build_model
from option_files import run_tools_train, tools_train_experiment, write_options
from reward_sr_helpers import batch, make_opt, train


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def test_steps_log_both_terms_and_update_the_frm_on_schedule(tmp_path):
    model = build_model(make_opt(tmp_path))
    data, moved, logs = batch(), [], []
    for it in range(1, 5):
        before_frm, before_g = snapshot(model.frm), snapshot(model.net_g)
        logs += train(model, data, 1, start=it)
        moved.append(bool(changed(before_frm, model.frm)))
        assert changed(before_g, model.net_g)
        log = logs[-1]
        with torch.no_grad():  # the output of this step's forward, before its optimiser step
            l1 = float(F.l1_loss(model.output, model.gt))
        assert log['l_pix'] == pytest.approx(l1, rel=1e-5)  # same kernels on the same tensors; the sum order may differ
        assert log['l_reward'] == pytest.approx(0.05 * (1 - log['reward_restored']), rel=1e-5)
    assert moved == [False, True, False, True]
    assert [('frm_acc' in log) for log in logs] == moved
    assert all({'hack_reward_gap', 'hack_hf_ratio'} <= set(log) for log in logs)


def test_logged_reward_gap_uses_the_frm_after_this_iterations_update(tmp_path):
    model = build_model(make_opt(tmp_path, frm_update={'every': 1, 'optim': {'lr': 1e-3}}))
    data = batch()
    old_frm = copy.deepcopy(model.frm)
    log = train(model, data, 1)[0]
    restored, captions = model.output.detach().clamp(0, 1), data['caption']

    def gap(frm):
        with torch.no_grad():
            return float(frm.similarity(restored, captions).mean() - frm.similarity(data['gt'], captions).mean())
    assert log['frm_updates'] == 1.0
    assert log['hack_reward_gap'] == pytest.approx(gap(model.frm), abs=1e-6)  # same FRM and inputs
    assert abs(gap(model.frm) - gap(old_frm)) > 1e-4  # ...and the update did move it


def test_frm_update_off_and_a_large_reward_weight_fire_the_monitor(tmp_path, basicsr_warnings):
    """A fixed FRM can be gamed: the generator soon out-scores the GT, and the warning says when."""
    model = build_model(make_opt(tmp_path, frm_update={'enabled': False}, optim_g={'type': 'Adam', 'lr': 3e-3},
                                 reward_opt={'type': 'RewardLoss', 'loss_weight': 10.0, 'frm': {'model_name': 'tiny'}},
                                 hack_monitor={'patience': 2}))
    frm = snapshot(model.frm)
    logs = train(model, batch(), 10)
    assert changed(frm, model.frm) == set() and not any('frm_acc' in log for log in logs)
    gaps = [log['hack_reward_gap'] for log in logs]
    assert gaps[0] < 0 < gaps[-1], gaps
    fired = [a for a in model.hack_monitor.alarms if a[2] == 'hack_reward_gap']
    assert fired and gaps[fired[0][0] - 2] > 0 and gaps[fired[0][0] - 1] > 0  # iterations are 1-based
    assert f'possible reward hacking at iter {fired[0][0]} (train): hack_reward_gap' in basicsr_warnings.text


def test_srgan_combination_trains_generator_discriminator_and_frm(tmp_path):
    opt = make_opt(tmp_path, 'RewardSRGANModel', frm_update={'every': 1, 'optim': {'lr': 1e-4}},
                   gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1},
                   optim_d={'type': 'Adam', 'lr': 1e-4}, net_d_iters=1, net_d_init_iters=1)
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 8}
    model = build_model(opt)
    before = {name: snapshot(getattr(model, name)) for name in ('net_g', 'net_d', 'frm')}
    logs = train(model, batch(), 3)
    assert len(model.optimizers) == 3 and model.optimizers[-1] is model.frm_update.optimizer
    assert 'l_reward' not in logs[0] and 'l_d_real' in logs[0]  # net_d_init_iters = 1: no generator step at iter 1
    assert {'l_g_pix', 'l_g_gan', 'l_reward', 'l_d_real', 'frm_acc', 'hack_reward_gap',
            'hack_hf_ratio'} <= set(logs[-1])
    assert all(changed(before[name], getattr(model, name)) for name in before)


def test_save_then_resume_restores_the_frm_and_its_optimiser(tmp_path):
    model = build_model(make_opt(tmp_path))
    train(model, batch(), 2)
    model.save(0, 2)
    assert os.path.exists(tmp_path / 'models' / 'net_frm_2.pth')
    opt = make_opt(tmp_path)
    opt['path'].update(resume_state=str(tmp_path / 'training_states' / '2.state'),
                       pretrain_network_g=str(tmp_path / 'models' / 'net_g_2.pth'))
    resumed = build_model(opt)
    resumed.resume_training(torch.load(opt['path']['resume_state'], weights_only=False))
    assert changed(snapshot(model.frm), resumed.frm) == set() and changed(snapshot(model.net_g), resumed.net_g) == set()
    old, new = (m.frm_update.optimizer.state_dict()['state'] for m in (model, resumed))
    assert old.keys() == new.keys() and old
    assert all(torch.equal(old[k]['exp_avg'], new[k]['exp_avg']) for k in old)


def test_validation_logs_the_monitor_values_to_the_tb_logger(tmp_path):
    class Loader(list):
        dataset = type('D', (), {'opt': {'name': 'val'}})()

    class TB:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, key, value, step):
            self.scalars[key] = value
    opt = make_opt(tmp_path)
    opt['val'] = {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}, 'save_img': False}
    model = build_model(opt)
    data = batch(2)
    items = [{k: (v[i:i + 1] if torch.is_tensor(v) else v[i:i + 1]) for k, v in data.items()} for i in range(2)]
    for i, item in enumerate(items):
        item['lq_path'] = [f'face_{i}.png']
    tb = TB()
    model.validation(Loader(items), 7, tb, save_img=False)
    assert {'metrics/val/psnr', 'metrics/val/hack_reward_gap', 'metrics/val/hack_hf_ratio'} <= set(tb.scalars)
    assert tb.scalars['metrics/val/hack_reward_gap'] == pytest.approx(
        tb.scalars['metrics/val/reward_restored'] - tb.scalars['metrics/val/reward_gt'], abs=1e-9)


def test_unknown_frm_update_option_lists_accepted_keys(tmp_path):
    with pytest.raises(Exception, match='accepted keys'):
        build_model(make_opt(tmp_path, frm_update={'evry': 5}))


def test_tools_train_runs_the_option_file_and_logs_reward_frm_and_monitor(tmp_path):
    with tools_train_experiment('reward_srmodel_tiny.yml', 'pytest_reward_sr') as (opt, exp):
        opt['train'].update(total_iter=4)
        opt['train']['frm_update']['every'] = 2
        opt['logger'].update(print_freq=2, save_checkpoint_freq=4)
        opt['val'].update(val_freq=4)
        for dataset in opt['datasets'].values():
            dataset['dataroot_gt'] = str(tmp_path / 'faces')
        result = run_tools_train(write_options(opt, tmp_path / 'opt.yml'))
        assert result.returncode == 0, result.stderr[-3000:]
        log = result.stdout + result.stderr
        for key in ('l_pix', 'l_reward', 'frm_acc', 'hack_reward_gap', 'hack_hf_ratio'):
            assert f'{key}: ' in log, key
        assert 'Validation demo_faces_tiny_val, iter 4: reward_restored' in log
        assert os.path.exists(os.path.join(exp, 'models', 'net_frm_4.pth'))
