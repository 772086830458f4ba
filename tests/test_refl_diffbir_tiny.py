"""ReFL on the tiny DiffBIR through the option files and tools, as a user runs them."""
import copy
import os
import shutil

import pytest
import torch
import yaml
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from option_files import ROOT, load_option_file, run_tools_train, short_training_option

from drward.models.reward_report import reward_before_after


def train(model, loader, iters):
    it = 0
    logs = []
    while it < iters:
        for data in loader:
            it += 1
            model.feed_data(data)
            model.optimize_parameters(it)
            logs.append(dict(model.get_current_log()))
            if it == iters:
                break
    return logs


@pytest.mark.heavy
def test_tiny_demo_raises_the_reward_while_the_frm_learns_to_prefer_gt(tmp_path, one_thread):
    opt = load_option_file('refl_diffbir_tiny.yml', tmp_path)
    torch.manual_seed(0)
    train_opt = opt['datasets']['train']
    loader = build_dataloader(build_dataset(train_opt), train_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    val = build_dataset(opt['datasets']['val'])
    items = [val[i] for i in range(8)]
    lq, gt = (torch.stack([it[k] for it in items]) for k in ('lq', 'gt'))
    captions = [it['caption'] for it in items]
    model = build_model(opt)
    initial = copy.deepcopy(model.net_g.trained_state_dict())
    logs = train(model, loader, opt['train']['total_iter'])
    frm_logs = [log for log in logs if 'frm_acc' in log]
    assert len(frm_logs) == opt['train']['total_iter'] // opt['train']['frm_update']['every']
    assert all({'l_reg', 'l_dwt', 'l_reward', 'l_total', 'reward_restored', 'reward_gt'} <= set(log) for log in logs)
    report = reward_before_after(model.net_g, initial, model.frm, lq, gt, captions)
    assert report['reward_trained'] > report['reward_initial'], report
    assert report['frm_prefers_gt'] >= 0.75, report
    assert frm_logs[-1]['frm_acc'] >= frm_logs[0]['frm_acc']


@pytest.mark.heavy
def test_interrupted_tiny_run_resumes_with_auto_resume(tmp_path):
    name = f'pytest_resume_{os.getpid()}'
    opt = short_training_option('refl_diffbir_tiny.yml', tmp_path, name, total_iter=4, every=2)
    exp = os.path.join(ROOT, 'experiments', name)
    try:
        first = tmp_path / 'first.yml'
        first.write_text(yaml.safe_dump(opt))
        result = run_tools_train(first)
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(os.listdir(os.path.join(exp, 'training_states'))) == ['2.state', '4.state']
        frm_4 = torch.load(os.path.join(exp, 'models', 'net_frm_4.pth'), weights_only=True)['state_dict']
        opt['train'].update(total_iter=6)
        second = tmp_path / 'second.yml'
        second.write_text(yaml.safe_dump(opt))
        result = run_tools_train(second, '--auto_resume')
        assert result.returncode == 0, result.stderr[-3000:]
        log = result.stdout + result.stderr
        assert 'Resuming training from epoch' in log and 'iter: 4.' in log
        assert f'resumed the FRM from {os.path.join(exp, "models", "net_frm_4.pth")}' in log
        assert 'iter:       5' in log and 'iter:       1,' not in log
        assert 'hack_reward_gap: ' in log and 'hack_hf_ratio: ' in log  # the reward-hacking monitor, every log
        assert os.path.exists(os.path.join(exp, 'training_states', '6.state'))
        frm_6 = torch.load(os.path.join(exp, 'models', 'net_frm_6.pth'), weights_only=True)['state_dict']
        assert any(not torch.equal(frm_6[k], frm_4[k]) for k in frm_4)  # it trained on from iter 4
    finally:
        shutil.rmtree(exp, ignore_errors=True)
        shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)


def test_real_option_file_stops_before_training_naming_each_missing_file(tmp_path):
    result = run_tools_train(os.path.join(ROOT, 'options', 'refl_diffbir.yml'))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5, result.stdout
    assert all(line.startswith('missing weight file weights/') and 'option key' in line for line in lines)
    assert any('network_g.diffbir_checkpoint' in line and 'v1_face.pth' in line for line in lines)


@pytest.mark.parametrize('name', ['refl_diffbir.yml', 'refl_diffbir_authors.yml'])
def test_real_option_file_keys_are_all_accepted(tmp_path, name):
    """Every key of the option file is accepted: build it with tiny models in place of the weight files."""
    opt = load_option_file(name, tmp_path)
    opt['num_gpu'] = 0
    net = opt['network_g']
    for key in ('sd_checkpoint', 'diffbir_checkpoint', 'swinir_checkpoint'):
        net[key] = None
    net['tiny'] = True
    frm = opt['train']['reward_opt']['frm']
    frm.update(model_name='tiny', checkpoint=None)
    opt['train']['lpips_opt'] = dict(opt['train']['lpips_opt'], backbone_path=None, random_backbone=True)
    opt['train']['mixed_precision'] = 'no'
    model = build_model(opt)
    assert model.grad_accum == 4 and model.grad_steps == 1 and model.frm_update.every == 10
    assert model.optimizer_g.defaults['lr'] == 5e-5
    assert model.optimizer_frm.defaults['lr'] == 2e-6
    # the reward term's weight λ_reward · w_FRM (the older frm form puts λ on the FRM entry, RewardLoss's own is 1)
    weights = [c.loss_weight * (c.weights[0] if c is model.reward_loss else 1) for c in model.criteria.values()]
    assert weights == pytest.approx([1e-4, 0.01, 0.005, 0.01])
