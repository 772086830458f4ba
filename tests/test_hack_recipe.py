"""The reward-hacking recipe: train with the FRM updates off ('never'), resume that run's state with them on. The
resume works, the change is logged as a switch (not refused) and marked in training_curves.png's data, which a
later read of the logs finds again."""
import torch
from basicsr.models import build_model

from drward.utils.curves import parse_log_lines, switch_line
from drward.utils.safe_load import load_training_state
from test_refl_model import batch, make_opt, snapshot

import toy_restorer  # noqa: F401  (registers ToyRestorer)


def _train(model, iters):
    for it in iters:
        model.feed_data(batch())
        model.optimize_parameters(it)


def test_no_frm_update_then_resumed_with_updates_on_logs_and_marks_the_switch(tmp_path, capfd):
    opt = make_opt(tmp_path, frm_update={'every': 'never', 'optim': {'lr': 1e-4, 'weight_decay': 0.35}})
    opt['path']['experiments_root'] = str(tmp_path)
    opt['logger'] = {'print_freq': 1}
    induced = build_model(opt)
    frm_before = snapshot(induced.frm)
    _train(induced, (1, 2, 3, 4))
    assert all(torch.equal(v, frm_before[k]) for k, v in induced.frm.state_dict().items())  # never updated
    assert induced.frm_update.updates == 0
    induced.save(0, 4)

    opt = make_opt(tmp_path, frm_update={'every': 2, 'optim': {'lr': 1e-4, 'weight_decay': 0.35}})
    opt['path'].update(experiments_root=str(tmp_path), resume_state=str(tmp_path / 'training_states' / '4.state'))
    opt['logger'] = {'print_freq': 1}
    repaired = build_model(opt)
    capfd.readouterr()
    repaired.resume_training(load_training_state(opt['path']['resume_state']))
    what = 'train.frm_update changed: every never → 2'
    assert switch_line(4, what) in capfd.readouterr().err  # BasicSR's logger writes to stderr
    _train(repaired, (5, 6))
    assert repaired.frm_update.updates == 1 and 6 in repaired.curves.curves.frm_updates
    assert repaired.curves.curves.switches == [(4, what)]
    assert parse_log_lines([f'2026-12-03 10:00:00,000 WARNING: ReFLModel: {switch_line(4, what)}']).switches == [
        (4, what)]
    assert repaired.curves.draw().endswith('training_curves.png')


def test_an_unchanged_resume_reports_no_switch(tmp_path, capfd):
    model = build_model(make_opt(tmp_path))
    _train(model, (1,))
    model.save(0, 1)
    opt = make_opt(tmp_path)
    opt['path']['resume_state'] = str(tmp_path / 'training_states' / '1.state')
    resumed = build_model(opt)
    capfd.readouterr()
    resumed.resume_training(load_training_state(opt['path']['resume_state']))
    assert 'training switch' not in capfd.readouterr().err and resumed.curves.curves.switches == []
