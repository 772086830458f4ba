"""FRMModel: what a step trains, the loss and warm-up, learning on held-out pairs, checkpoints, resume, options."""
import logging
import os
import os.path as osp
import shutil

import pytest
import torch
import yaml
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from option_files import ROOT, load_option_file, run_tools_train

from drward.annotate.demo import make_demo_pairs
from drward.data.pairs_file import write_pairs
from drward.losses.reward_loss import RewardLoss
from drward.utils.options import OptionError, find_missing_weights
from drward.utils.safe_load import load_training_state

FACES, VARIANTS, VAL_FACES = 14, 5, 4  # the last VAL_FACES faces of the demo: their pairs are held out


@pytest.fixture(scope='module')
def pairs_dir(tmp_path_factory):
    """Demo pairs (64² faces, blur + noise copies, the less degraded one preferred), split by face."""
    folder = tmp_path_factory.mktemp('frm_pairs')
    demo = make_demo_pairs(str(folder), faces=FACES, size=64, variants=VARIANTS, human_fraction=1.0, seed=0)
    faces = sorted({pair.reference for pair in demo.pairs})
    held_out = set(faces[-VAL_FACES:])
    write_pairs(str(folder / 'train.jsonl'), [p for p in demo.pairs if p.reference not in held_out])
    write_pairs(str(folder / 'val.jsonl'), [p for p in demo.pairs if p.reference in held_out])
    return folder


def dataset_opt(pairs_dir, phase, **extra):
    return {'name': f'pairs_{phase}', 'type': 'PreferencePairDataset', 'phase': phase, 'scale': 1,
            'pairs_file': str(pairs_dir / f'{phase}.jsonl'), 'image_size': 64, 'num_worker_per_gpu': 0,
            'batch_size_per_gpu': 8, 'dataset_enlarge_ratio': 1, **extra}


def make_opt(tmp_path, pairs_dir, network=None, val=None, **train):
    return {
        'name': 'frm_test', 'model_type': 'FRMModel', 'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1,
        'num_gpu': 0, 'manual_seed': 0,
        'network_frm': {'type': 'FaceRewardModel', 'model_name': 'tiny', 'unlocked_image_groups': 3,
                        'unlocked_text_layers': 2, **(network or {})},
        'datasets': {'train': dataset_opt(pairs_dir, 'train'), 'val': dataset_opt(pairs_dir, 'val')},
        'path': {'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'training_states'),
                 'resume_state': None, 'pretrain_network_frm': None},
        'train': {'warmup_iter': -1, 'grad_clip': 1.0, 'optim_frm': {'lr': 5e-4}, **train},
        'val': {'val_freq': 10, 'batch_size': 32, **(val or {})},
    }


def loader(opt, phase):
    dataset_options = opt['datasets'][phase]
    return build_dataloader(build_dataset(dataset_options), dataset_options, num_gpu=0, dist=False, sampler=None,
                            seed=0)


def pair_batch(n=4, size=64, labels=None):
    g = torch.Generator().manual_seed(3)
    return {'img_a': torch.rand(n, 3, size, size, generator=g), 'img_b': torch.rand(n, 3, size, size, generator=g),
            'caption': [f'a photo of face {i}' for i in range(n)],
            'label': torch.tensor(labels if labels is not None else [1.0, 0.0] * (n // 2))}


@pytest.fixture
def model(tmp_path, pairs_dir):
    return build_model(make_opt(tmp_path, pairs_dir))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before, module):
    return {k for k, v in module.named_parameters() if not torch.equal(v, before[k])}


def train(model, train_loader, iters, start=1, warmup=-1):
    it = start
    while it < start + iters:
        for data in train_loader:
            model.update_learning_rate(it, warmup)
            model.feed_data(data)
            model.optimize_parameters(it)
            it += 1
            if it >= start + iters:
                break


def test_a_step_changes_exactly_the_unlocked_frm_parameters(model):
    unlocked = {n for n, p in model.frm.named_parameters() if p.requires_grad}
    locked = {n for n, p in model.frm.named_parameters() if not p.requires_grad}
    assert locked and any(n.startswith('clip.visual.') for n in unlocked) and 'clip.logit_scale' in unlocked
    before = snapshot(model.frm)
    model.feed_data(pair_batch())
    model.optimize_parameters(1)
    assert changed(before, model.frm) == unlocked


def test_step_loss_is_the_soft_label_pair_cross_entropy_and_logged(model):
    data = pair_batch(labels=[0.5, 0.3, 1.0, 0.0])
    with torch.no_grad():
        logits = model.frm.preference_logits(data['img_a'], data['img_b'], data['caption'])
    y = torch.stack([data['label'], 1 - data['label']], dim=1)
    expected = -(y * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    model.feed_data(data)
    model.optimize_parameters(1)
    log = model.get_current_log()
    # the model's forward runs with gradient (training), the expected one under no_grad: float32 rounding
    assert log['l_frm'] == pytest.approx(float(expected), rel=1e-5)
    assert {'frm_acc', 'frm_grad_norm', 'logit_scale', 'inv_temperature'} <= set(log)
    assert log['inv_temperature'] == pytest.approx(float(torch.tensor(log['logit_scale']).exp()), rel=1e-5)


def test_learning_rate_warms_up_linearly_then_holds(tmp_path, pairs_dir):
    model = build_model(make_opt(tmp_path, pairs_dir, optim_frm={'lr': 1e-3}))
    lrs = []
    for it in range(1, 7):
        model.update_learning_rate(it, warmup_iter=4)
        lrs.append(model.get_current_learning_rate()[0])
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_training_raises_held_out_pair_accuracy(tmp_path, pairs_dir):
    """Faces never seen in training: the FRM learns to prefer the sharper, less noisy copy (all groups unlocked:
    the tiny model's random patch embedding alone is a poor blur/noise detector)."""
    opt = make_opt(tmp_path, pairs_dir, {'unlocked_image_groups': 6, 'unlocked_text_layers': 4},
                   optim_frm={'lr': 2e-4})
    model = build_model(opt)
    val_loader = loader(opt, 'val')
    before = model.evaluate_pairs(val_loader)
    train(model, loader(opt, 'train'), iters=40)
    after = model.evaluate_pairs(val_loader)
    assert before['pairs'] == after['pairs'] == VAL_FACES * VARIANTS * (VARIANTS - 1) // 2
    assert after['pair_acc'] > before['pair_acc']
    assert after['val_loss'] < before['val_loss']


def test_validation_logs_accuracy_and_loss_including_the_start(tmp_path, pairs_dir, caplog):
    class Board:
        def __init__(self):
            self.points = []

        def add_scalar(self, tag, value, step):
            self.points.append((tag, step))

    caplog.set_level(logging.INFO, logger='basicsr')
    opt = make_opt(tmp_path, pairs_dir, val={'val_at_start': True})
    model = build_model(opt)
    model.feed_data(pair_batch())
    model.optimize_parameters(1)  # measures the starting FRM first
    board = Board()
    results = model.validation(loader(opt, 'val'), 1, board, False)
    assert set(results) >= {'pair_acc', 'val_loss'} and 0 <= results['pair_acc'] <= 1
    assert board.points == [('metrics/pairs_val/pair_acc', 0), ('metrics/pairs_val/val_loss', 0),
                            ('metrics/pairs_val/pair_acc', 1), ('metrics/pairs_val/val_loss', 1)]
    assert 'Validation pairs_val @ iter 0: pair_acc' in caplog.text


def test_saved_checkpoint_loads_into_reward_loss_with_the_same_scores(model, tmp_path):
    model.feed_data(pair_batch())
    model.optimize_parameters(1)
    model.save(0, 1)
    model.save(-1, -1)
    path = tmp_path / 'models' / 'net_frm_1.pth'
    assert set(torch.load(path, weights_only=True)) == {'state_dict'}
    assert (tmp_path / 'models' / 'net_frm_latest.pth').exists()
    reward = RewardLoss(frm={'model_name': 'tiny', 'checkpoint': str(path)})
    images, captions = pair_batch()['img_a'], pair_batch()['caption']
    model.frm.eval()
    with torch.no_grad():
        expected = model.frm.similarity(images, captions)
        reward(images * 2 - 1, captions=captions)
    # RewardLoss maps its [-1, 1] input back to [0, 1] ((2x − 1 + 1)/2): float32 rounding of that round trip
    assert torch.allclose(reward.last_reward, expected, atol=1e-6)
    assert not torch.allclose(expected, RewardLoss(frm={'model_name': 'tiny'}).frm.similarity(images, captions))


def test_resume_restores_frm_and_optimizer_state(model, tmp_path, pairs_dir):
    for it in (1, 2):
        model.feed_data(pair_batch())
        model.optimize_parameters(it)
    model.save(0, 2)
    opt = make_opt(tmp_path, pairs_dir)
    opt['path']['resume_state'] = str(tmp_path / 'training_states' / '2.state')
    resumed = build_model(opt)
    resumed.resume_training(load_training_state(opt['path']['resume_state']))
    state_old = model.optimizer_frm.state_dict()['state']
    state_new = resumed.optimizer_frm.state_dict()['state']
    assert state_old.keys() == state_new.keys() and state_old
    for k in state_old:
        assert torch.equal(state_old[k]['exp_avg_sq'], state_new[k]['exp_avg_sq'])
    for m in (model, resumed):  # the next step is the same step
        m.feed_data(pair_batch())
        m.optimize_parameters(3)
    for key, value in model.frm.state_dict().items():
        assert torch.equal(resumed.frm.state_dict()[key], value), key


def test_gradient_checkpointing_reaches_both_towers_and_keeps_the_step(tmp_path, pairs_dir, num_threads):
    models = []
    for flag in (False, True):
        torch.manual_seed(0)
        models.append(build_model(make_opt(tmp_path / str(flag), pairs_dir, {'gradient_checkpointing': flag})))
    plain, checkpointed = models
    assert checkpointed.frm.clip.visual.transformer.grad_checkpointing
    assert checkpointed.frm.clip.transformer.grad_checkpointing
    for m in models:
        m.feed_data(pair_batch())
        m.optimize_parameters(1)
    # checkpointing recomputes the forward with the same kernels on the same inputs: loss and gradients agree to a
    # few ulps (rel 1e-6 ≈ 8·ε on the loss), and each weight takes the same AdamW step (atol 1e-6 ≈ 8 ulps of a
    # unit weight); checked at 1 and 2 threads
    assert checkpointed.get_current_log()['l_frm'] == pytest.approx(plain.get_current_log()['l_frm'], rel=1e-6)
    for key, value in plain.frm.state_dict().items():
        assert torch.allclose(checkpointed.frm.state_dict()[key], value, atol=1e-6), key


@pytest.mark.parametrize('section, key', [('train', 'warmup_iters'), ('val', 'metrics'), ('network_frm', 'unlock')])
def test_unknown_option_keys_are_refused_with_the_accepted_ones(tmp_path, pairs_dir, section, key):
    opt = make_opt(tmp_path, pairs_dir)
    opt[section][key] = 1
    with pytest.raises(OptionError, match='accepted keys'):
        build_model(opt)


def test_feed_data_refuses_batches_that_are_not_pairs(model):
    with pytest.raises(KeyError, match='PreferencePairDataset'):
        model.feed_data({'lq': torch.rand(1, 3, 8, 8), 'gt': torch.rand(1, 3, 8, 8)})


def test_tiny_option_file_builds_and_steps(tmp_path, pairs_dir):
    opt = load_option_file('train_frm_tiny.yml', tmp_path)
    for phase in ('train', 'val'):
        opt['datasets'][phase]['pairs_file'] = str(pairs_dir / f'{phase}.jsonl')
        opt['datasets'][phase].pop('sources')  # the test pairs are all "human"
    model = build_model(opt)
    train(model, loader(opt, 'train'), iters=2, warmup=opt['train']['warmup_iter'])
    assert model.get_current_log()['l_frm'] > 0


def test_real_option_file_names_the_hps_v2_file_and_is_accepted(tmp_path):
    opt = load_option_file('train_frm.yml', tmp_path)
    net = opt['network_frm']
    assert net['checkpoint'] == 'weights/HPS_v2_compressed.pt'
    assert osp.exists(osp.join(ROOT, net['checkpoint'])) or dict(find_missing_weights(opt))['network_frm.checkpoint']
    assert (net['model_name'], net['unlocked_image_groups'], net['unlocked_text_layers']) == ('ViT-H-14', 20, 11)
    assert opt['train']['total_iter'] == 20000 and opt['train']['warmup_iter'] == 500
    assert opt['datasets']['train']['batch_size_per_gpu'] == 16
    opt['network_frm'] = {'type': 'FaceRewardModel', 'model_name': 'tiny'}  # ViT-H-14 is too big for a unit test
    opt.update(num_gpu=0)
    opt['train']['mixed_precision'] = 'no'
    groups = build_model(opt).optimizer_frm.param_groups
    assert [g['weight_decay'] for g in groups] == [0.35, 0.0]
    assert groups[0]['initial_lr'] == pytest.approx(3.3e-6) and groups[0]['betas'] == (0.9, 0.98)


def run_train(opt, path, *extra):
    path.write_text(yaml.safe_dump(opt))
    result = run_tools_train(path, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr + result.stdout


@pytest.mark.heavy
def test_tiny_option_runs_through_tools_train_and_auto_resumes(tmp_path, pairs_dir):
    with open(osp.join(ROOT, 'options', 'train_frm_tiny.yml')) as f:
        opt = yaml.safe_load(f)
    opt['name'] = name = f'pytest_frm_{os.getpid()}'
    for phase in ('train', 'val'):
        opt['datasets'][phase].update(pairs_file=str(pairs_dir / f'{phase}.jsonl'), name=f'pairs_{phase}')
        opt['datasets'][phase].pop('sources')
    opt['train'].update(total_iter=4)
    opt['val'].update(val_freq=2)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2)
    exp = osp.join(ROOT, 'experiments', name)
    try:
        log = run_train(opt, tmp_path / 'first.yml')
        assert 'Validation pairs_val @ iter 0: pair_acc' in log and 'Validation pairs_val @ iter 4: pair_acc' in log
        assert sorted(os.listdir(osp.join(exp, 'models'))) == ['net_frm_2.pth', 'net_frm_4.pth', 'net_frm_latest.pth']
        opt['train'].update(total_iter=6)
        log = run_train(opt, tmp_path / 'second.yml', '--auto_resume')
        assert f'FaceRewardModel: loaded {osp.join(exp, "models", "net_frm_4.pth")}' in log
        assert f'iter:{5:8,d}' in log and f'iter:{4:8,d}' not in log
        assert 'Validation pairs_val @ iter 0' not in log
    finally:
        shutil.rmtree(exp, ignore_errors=True)
