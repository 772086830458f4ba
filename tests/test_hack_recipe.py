"""The reward-hacking recipe: train with the FRM updates off ('never'), resume that run's state with them on. The
resume works, the change is logged as a switch (not refused) and marked in training_curves.png's data, which a
later read of the logs finds again."""
import torch
import toy_restorer  # noqa: F401  (registers ToyRestorer)
from basicsr.models import build_model
from test_refl_model import batch, make_opt, snapshot

from drward.archs.frm_arch import build_frm
from drward.models.dynamic_frm import DynamicFRMUpdate
from drward.utils.curves import parse_log_lines, switch_line
from drward.utils.safe_load import load_training_state


def _train(model, iters):
    for it in iters:
        model.feed_data(batch())
        model.optimize_parameters(it)


def test_no_frm_update_then_resumed_with_updates_on_logs_and_marks_the_switch(tmp_path, basicsr_warnings):
    opt = make_opt(tmp_path, frm_update={'every': 'never', 'optim': {'lr': 1e-4, 'weight_decay': 0.35}})
    opt['path']['experiments_root'] = str(tmp_path)
    opt['logger'] = {'print_freq': 2}  # the hack monitor measures at log steps only
    induced = build_model(opt)
    frm_before = snapshot(induced.frm)
    _train(induced, (1, 2))
    assert all(torch.equal(v, frm_before[k]) for k, v in induced.frm.state_dict().items())  # never updated
    assert induced.frm_update.updates == 0
    induced.save(0, 2)

    opt = make_opt(tmp_path, frm_update={'every': 2, 'optim': {'lr': 1e-4, 'weight_decay': 0.35}})
    opt['path'].update(experiments_root=str(tmp_path), resume_state=str(tmp_path / 'training_states' / '2.state'))
    opt['logger'] = {'print_freq': 2}  # the hack monitor measures at log steps only
    repaired = build_model(opt)
    basicsr_warnings.clear()
    repaired.resume_training(load_training_state(opt['path']['resume_state']))
    what = 'train.frm_update changed: every never → 2'
    assert switch_line(2, what) in basicsr_warnings.text  # logged once, on BasicSR's logger
    _train(repaired, (3, 4))
    assert repaired.frm_update.updates == 1 and 4 in repaired.curves.curves.frm_updates
    assert repaired.curves.curves.switches == [(2, what)]
    assert parse_log_lines([f'2026-12-03 10:00:00,000 WARNING: ReFLModel: {switch_line(2, what)}']).switches == [
        (2, what)]
    assert repaired.curves.draw().endswith('training_curves.png')


def test_only_a_changed_setting_is_reported_and_older_states_report_nothing():
    frm = build_frm({'model_name': 'tiny'})
    saved = DynamicFRMUpdate(frm, {'every': 10}).settings
    assert DynamicFRMUpdate(frm, {'every': 10}).changes_since(saved) is None
    assert DynamicFRMUpdate(frm, {'every': 10}).changes_since(None) is None  # a state written before the check
    changed = DynamicFRMUpdate(frm, {'every': 'never', 'optim': {'lr': 1e-5}}).changes_since(saved)
    assert changed == 'train.frm_update changed: every 10 → never, lr 2e-06 → 1e-05'
