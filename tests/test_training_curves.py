"""Training curves: log lines parse into the curves' data, a tiny ReFL run draws them, plot_curves redraws them."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml
from option_files import ROOT, run_tools_train

from drward.data.demo_faces import make_demo_faces
from drward.utils.curves import CurveRecorder, TrainingCurves, _panels, parse_log_lines, read_run_logs

LINES = [
    '2026-11-30 15:20:01,123 INFO: [refl_..][epoch:  0, iter:   1,000, lr:(1.000e-03,1.000e-04,)] '
    '[eta: 0:00:40, time (data): 0.812 (0.003)] l_reg: 1.2340e-05 l_dwt: 3.0000e-02 l_total: 5.1000e-01 '
    'reward_restored: 1.5000e-01 reward_gt: 2.5000e-01 l_frm: 6.9000e-01 frm_acc: 7.5000e-01 frm_updates: 1.0000e+00 ',
    '2026-11-30 15:20:02,000 INFO: Validation demo_val, iter 1000: psnr: 21.5000, reward_restored: 0.1600, '
    'reward_gt: 0.2400',
    '2026-11-30 15:20:03,000 INFO: Validation frm_pairs @ iter 0: pair_acc 0.4098 (best 0.4098 @ iter 0), '
    'val_loss 0.6912 on 61 pairs (61 decisive)',
    '2026-11-30 15:20:04,000 INFO: an unrelated line: 3 faces',
]


def test_log_lines_parse_into_training_values_validations_and_frm_updates():
    curves = parse_log_lines(LINES)
    assert curves.train['l_reg'] == {1000: 1.234e-05} and curves.train['frm_acc'] == {1000: 0.75}
    assert curves.val['demo_val/psnr'] == {1000: 21.5} and curves.val['demo_val/reward_gt'] == {1000: 0.24}
    assert curves.val['frm_pairs/pair_acc'] == {0: 0.4098} and curves.val['frm_pairs/val_loss'] == {0: 0.6912}
    assert set(curves.val) == {'demo_val/psnr', 'demo_val/reward_restored', 'demo_val/reward_gt',
                               'frm_pairs/pair_acc', 'frm_pairs/val_loss'}
    assert curves.frm_updates == [1000]
    titles = [panel[0] for panel in _panels(curves)]
    assert titles[:3] == ['FRM reward (cosine): restored vs GT', 'FRM pair accuracy', 'loss terms (log scale)']
    assert {'validation: psnr', 'validation: val_loss'} <= set(titles)


def test_recorder_keeps_the_printed_iterations_and_marks_every_frm_update(tmp_path):
    recorder = CurveRecorder({'name': 'x', 'is_train': True, 'logger': {'print_freq': 2},
                              'path': {'experiments_root': str(tmp_path)}})
    for it in range(1, 6):
        recorder.train(it, {'l_total': 1.0 / it, **({'frm_updates': 1.0} if it % 3 == 0 else {})})
    assert recorder.curves.train['l_total'] == {2: 0.5, 4: 0.25}
    assert recorder.curves.frm_updates == [3]
    recorder.validation(4, 'val', {'psnr': 20.0})
    assert (tmp_path / 'training_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    saved = TrainingCurves.from_json(json.loads((tmp_path / 'training_curves.json').read_text()))
    assert saved == recorder.curves


@pytest.mark.heavy
def test_tiny_refl_run_draws_its_curves_and_plot_curves_redraws_them_from_the_log(tmp_path):
    with open(os.path.join(ROOT, 'options', 'refl_diffbir_tiny.yml')) as f:
        opt = yaml.safe_load(f)
    opt['network_g']['num_steps'] = 2
    opt['train'].update(total_iter=3, grad_accum=2)
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['train']['frm_update']['every'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=100)
    opt['val']['val_freq'] = 100  # only BasicSR's validation after the last iteration
    opt['path']['experiments_root'] = str(tmp_path / 'experiments')
    opt['datasets']['train']['dataroot_gt'] = str(tmp_path / 'faces')
    make_demo_faces(str(tmp_path / 'val_faces'), 64, count=2)  # two validation faces keep the run short
    opt['datasets']['val']['dataroot_gt'] = str(tmp_path / 'val_faces')
    (tmp_path / 'opt.yml').write_text(yaml.safe_dump(opt))
    result = run_tools_train(tmp_path / 'opt.yml')
    assert result.returncode == 0, result.stderr[-3000:]
    exp = tmp_path / 'experiments' / opt['name']
    assert (exp / 'training_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    recorded = TrainingCurves.from_json(json.loads((exp / 'training_curves.json').read_text()))
    assert {'l_reg', 'l_dwt', 'l_reward', 'reward_restored', 'reward_gt', 'frm_acc'} <= set(recorded.train)
    assert recorded.frm_updates == [2] and set(recorded.train['l_total']) == {1, 2, 3}
    # validation metrics, the rewards, and the reward-hacking monitor's two values (issue 13)
    assert set(recorded.val) == {f'demo_faces_tiny_val/{k}' for k in ('psnr', 'reward_restored', 'reward_gt',
                                                                       'hack_reward_gap', 'hack_hf_ratio')}

    redrawn = tmp_path / 'redrawn.png'
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'plot_curves.py'), str(exp), '-o',
                          str(redrawn)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert redrawn.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and 'FRM updates at iterations [2]' in out.stdout
    parsed = read_run_logs(str(exp))
    assert parsed.frm_updates == recorded.frm_updates
    for group in ('train', 'val'):
        assert getattr(parsed, group).keys() == getattr(recorded, group).keys()
        for name, series in getattr(recorded, group).items():
            for it, value in series.items():  # the log prints 4 decimals (validation) or 5 significant digits
                assert getattr(parsed, group)[name][it] == pytest.approx(value, rel=1e-4, abs=6e-5), (name, it)


def test_plot_curves_names_a_folder_without_a_log(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location('plot_curves_tool', os.path.join(ROOT, 'tools', 'plot_curves.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, 'argv', ['plot_curves.py', str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert str(stop.value) == (f'plot_curves: no train_*.log in {tmp_path} (BasicSR writes one per run into the '
                               'experiment folder)')


def test_frm_model_records_its_loss_accuracy_and_validation_and_draws_them(tmp_path, one_thread):
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model

    from drward.annotate.demo import make_demo_pairs
    from drward.data.pairs_file import write_pairs
    demo = make_demo_pairs(str(tmp_path / 'pairs'), faces=3, size=64, variants=3, human_fraction=1.0, seed=0)
    write_pairs(str(tmp_path / 'pairs.jsonl'), demo.pairs)
    data = {'name': 'pairs', 'type': 'PreferencePairDataset', 'phase': 'val', 'scale': 1, 'image_size': 64,
            'pairs_file': str(tmp_path / 'pairs.jsonl'), 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 4}
    opt = {'name': 'frm_curves', 'model_type': 'FRMModel', 'is_train': True, 'dist': False, 'rank': 0,
           'world_size': 1, 'num_gpu': 0, 'manual_seed': 0, 'logger': {'print_freq': 1},
           'network_frm': {'type': 'FaceRewardModel', 'model_name': 'tiny'}, 'datasets': {'val': data},
           'path': {'experiments_root': str(tmp_path), 'models': str(tmp_path / 'models'),
                    'training_states': str(tmp_path / 'states'), 'resume_state': None},
           'train': {'warmup_iter': -1, 'optim_frm': {'lr': 1e-3}}, 'val': {'batch_size': 16}}
    model = build_model(opt)
    loader = build_dataloader(build_dataset(data), data, num_gpu=0, dist=False, sampler=None, seed=0)
    for it, batch in zip((1, 2), loader):
        model.feed_data(batch)
        model.optimize_parameters(it)
    model.validation(loader, 2, None)
    curves = model.curves.curves
    assert set(curves.train['l_frm']) == set(curves.train['frm_acc']) == {1, 2}
    assert set(curves.val) == {'pairs/pair_acc', 'pairs/val_loss'} and curves.frm_updates == []
    assert (tmp_path / 'training_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_resumed_run_starts_from_its_logs_up_to_the_resumed_iteration(tmp_path):
    line = ('2026-11-30 15:20:01,123 INFO: [refl_..][epoch:  0, iter:       {it}, lr:(1.000e-03,)] [eta: 0:00:40, '
            'time (data): 0.812 (0.003)] l_total: {value:.4e} ')
    lines = [line.format(it=it, value=1 / it) for it in (2, 4, 6)]
    (tmp_path / 'train_x_20261130_152000.log').write_text('\n'.join(lines))
    recorder = CurveRecorder({'name': 'x', 'is_train': True, 'logger': {'print_freq': 2},
                              'path': {'experiments_root': str(tmp_path), 'resume_state': str(tmp_path / '4.state')}})
    assert recorder.curves.train == {'l_total': {2: 0.5, 4: 0.25}} and recorder.curves.title == 'x'
