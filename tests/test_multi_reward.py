"""Multi-reward ReFL: the FRM plus pyiqa no-reference metrics, each weighted and logged as l_reward_<name>; metrics
that cannot carry a gradient are refused by name before anything is built."""
import pytest
import toy_restorer  # noqa: F401  (registers ToyRestorer)
from basicsr.models import build_model
from test_refl_model import batch, make_opt

from drward.losses.iqa_reward import IQAReward
from drward.utils.options import OptionError


@pytest.mark.parametrize('metric,why', [('niqe', 'hand-made'), ('lpips', 'a full-reference'),
                                        ('no_such_metric', 'not a pyiqa metric')])
def test_a_metric_that_cannot_be_a_reward_is_refused_by_name(metric, why):
    with pytest.raises(OptionError, match=rf"'{metric}' cannot be a reward \({why}"):
        IQAReward({'metric': metric, 'loss_weight': 1.0, 'tiny': True})


def test_tiny_multi_reward_step_logs_each_reward_and_their_sum(tmp_path):
    reward_opt = {'type': 'RewardLoss', 'loss_weight': 0.005, 'frm': {'model_name': 'tiny'},
                  'iqa_rewards': [{'metric': 'musiq', 'loss_weight': 0.01, 'tiny': True}]}
    model = build_model(make_opt(tmp_path, reward_opt=reward_opt))
    model.feed_data(batch())
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert {'l_reward', 'l_reward_frm', 'l_reward_musiq_tiny', 'hack_reward_gap_musiq_tiny'} <= set(log)
    # l_reward is the float32 sum of the two weighted terms, averaged over 2 micro-batches: a few ulps of ~1
    assert log['l_reward'] == pytest.approx(log['l_reward_frm'] + log['l_reward_musiq_tiny'], rel=1e-5, abs=1e-6)
    assert log['l_reward_musiq_tiny'] != 0.0
    assert all(not p.requires_grad for p in model.criteria['l_reward'].iqa_rewards.parameters())  # frozen


@pytest.mark.parametrize('parent', ['refl_diffbir', 'refl_diffbir_tiny'])
def test_multireward_option_file_is_its_parent_plus_iqa_rewards(parent):
    from option_files import read_option_file
    child = parent.replace('refl_diffbir', 'refl_diffbir_multireward')
    base, multi = read_option_file(f'{parent}.yml'), read_option_file(f'{child}.yml')
    rewards = multi['train']['reward_opt'].pop('iqa_rewards')
    assert rewards and all(r['metric'] in ('musiq', 'topiq_nr-face') for r in rewards)
    assert ('tiny' in multi['name']) == all(r.get('tiny', False) for r in rewards)
    base.pop('name'), multi.pop('name')
    assert base == multi
