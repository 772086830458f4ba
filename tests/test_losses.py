"""The DiffusionReward losses against hand computations (docs/design.md §1)."""
import pytest
import torch
import torch.nn.functional as F
from basicsr.losses import build_loss

from drward.losses.preference_loss import pair_accuracy
from drward.utils.options import MissingWeightsError


def blur(x, k=9, sigma=3.0):
    ax = torch.arange(k) - k // 2
    g = torch.exp(-ax.float() ** 2 / (2 * sigma ** 2))
    g = (g[:, None] * g[None, :]) / g.sum() ** 2
    return F.conv2d(F.pad(x, [k // 2] * 4, mode='reflect'), g.expand(3, 1, k, k).contiguous(), groups=3)


@pytest.fixture(scope='module')
def tiny_reward():
    return build_loss({'type': 'RewardLoss', 'frm': {'model_name': 'tiny'}})


# ------------------------------------------------------------------------------------------------ RewardLoss
def test_reward_loss_is_mean_one_minus_cosine(tiny_reward):
    pred = torch.rand(2, 3, 64, 64) * 2 - 1
    captions = ['a face', 'another face']
    expected = (1 - tiny_reward.frm.similarity((pred + 1) / 2, captions)).mean()
    torch.testing.assert_close(tiny_reward(pred, captions=captions), expected)


def test_reward_loss_uses_the_fallback_caption(tiny_reward):
    pred = torch.rand(1, 3, 64, 64) * 2 - 1
    expected = 1 - tiny_reward.frm.similarity((pred + 1) / 2, [tiny_reward.fallback_caption])
    torch.testing.assert_close(tiny_reward(pred), expected.mean())


def test_reward_gradient_reaches_image_and_generator_step_leaves_frm_unchanged(tiny_reward):
    generator = torch.nn.Conv2d(3, 3, 3, padding=1)
    opt = torch.optim.SGD(generator.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in tiny_reward.frm.state_dict().items()}
    image = torch.rand(2, 3, 64, 64, requires_grad=True)
    out = torch.tanh(generator(image))
    out.retain_grad()
    loss = tiny_reward(out, captions=['a', 'b'])
    loss.backward()
    opt.step()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_reward.frm.parameters())
    for k, v in tiny_reward.frm.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize('mapping', ['neg_cos', 'hinge', 'neg_logit'])
def test_reward_mappings(mapping):
    loss = build_loss({'type': 'RewardLoss', 'frm': {'model_name': 'tiny'}, 'mapping': mapping, 'margin': 0.9})
    pred = torch.rand(2, 3, 64, 64)
    r = loss.frm.similarity(pred, [loss.fallback_caption] * 2)
    expected = {'neg_cos': -r, 'hinge': torch.relu(0.9 - r), 'neg_logit': -loss.frm.logit_scale_exp * r}[mapping]
    torch.testing.assert_close(loss(pred * 2 - 1), expected.mean().detach())


def test_reward_loss_rejects_unknown_option_keys():
    with pytest.raises(Exception, match='accepted keys'):
        build_loss({'type': 'RewardLoss', 'frm': {'model_name': 'tiny', 'unlockd_text_layers': 3}})


# ------------------------------------------------------------------------------------------------ DWTLoss
@pytest.mark.parametrize('mode', ['dtcwt', 'dwt'])
def test_dwt_loss_zero_for_equal_images_and_grows_with_blur(mode):
    loss = build_loss({'type': 'DWTLoss', 'mode': mode, 'input_range': '[0,1]',
                       'band_weights': {'LL': 1.0, 'LH': 1.0, 'HL': 1.0, 'HH': 1.0}})
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    x = blur(x, 5, 1.0)  # some low-frequency content to lose
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    mild, strong = loss(blur(x, 9, 1.0), x).item(), loss(blur(x, 25, 6.0), x).item()
    assert 0 < mild < strong


def test_dtcwt_loss_equals_l1_of_lowpass_bands():
    from pytorch_wavelets import DTCWTForward
    t = DTCWTForward(J=3, biort='near_sym_b', qshift='qshift_b')
    pred, target = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    expected = F.l1_loss(t((pred + 1) / 2)[0], t((target + 1) / 2)[0])
    torch.testing.assert_close(build_loss({'type': 'DWTLoss'})(pred, target), expected)


def test_dwt_loss_rejects_unknown_band():
    with pytest.raises(ValueError, match='accepted'):
        build_loss({'type': 'DWTLoss', 'mode': 'dwt', 'band_weights': {'XX': 1.0}})


# ------------------------------------------------------------------------------------------------ RegLoss
def test_reg_loss_zero_for_equal_outputs_and_gradient_is_2_diff_over_numel():
    reg = build_loss({'type': 'RegLoss'})
    c0 = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    assert reg(list(zip([c.clone() for c in c0], c0))).item() == 0.0
    c = [(x + torch.randn_like(x)).requires_grad_() for x in c0]
    value = reg(c, c0)
    torch.testing.assert_close(value, sum(((a - b) ** 2).mean() for a, b in zip(c, c0)))
    value.backward()
    for a, b in zip(c, c0):
        torch.testing.assert_close(a.grad, 2 * (a - b).detach() / a.numel())


def test_reg_loss_weight_mode_is_squared_norm():
    reg = build_loss({'type': 'RegLoss', 'mode': 'weight', 'loss_weight': 0.5})
    theta, theta0 = [torch.ones(3, 3)], [torch.zeros(3, 3)]
    assert reg(theta, theta0).item() == pytest.approx(0.5 * 9)


# ------------------------------------------------------------------------------------------------ PreferenceLoss
def test_preference_loss_equals_written_out_cross_entropy():
    logits = torch.tensor([[2.0, 1.0], [0.5, 3.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    manual = []
    for (s1, s2), y in zip(logits.tolist(), labels.tolist()):
        p = [torch.exp(torch.tensor(s1)), torch.exp(torch.tensor(s2))]
        manual.append(-torch.log(p[y] / (p[0] + p[1])))
    manual = torch.stack(manual)
    torch.testing.assert_close(build_loss({'type': 'PreferenceLoss'})(logits, labels), manual.mean())
    torch.testing.assert_close(build_loss({'type': 'PreferenceLoss', 'reduction': 'sum', 'loss_weight': 0.1})(
        logits, labels), 0.1 * manual.sum())


def test_preference_loss_soft_labels():
    logits = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([0.25])
    log_sm = torch.log_softmax(logits, 1)[0]
    expected = -(0.25 * log_sm[0] + 0.75 * log_sm[1])
    torch.testing.assert_close(build_loss({'type': 'PreferenceLoss'})(logits, p), expected)
    assert pair_accuracy(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])).item() == 0.5


def test_preference_loss_rejects_bad_labels():
    with pytest.raises(ValueError, match='labels'):
        build_loss({'type': 'PreferenceLoss'})(torch.zeros(2, 2), torch.zeros(3))


# ------------------------------------------------------------------------------------------------ LPIPSLoss
def test_lpips_loss_missing_backbone_says_which_file(tmp_path):
    with pytest.raises(MissingWeightsError, match=r'vgg16-397923af.pth.*backbone_path'):
        build_loss({'type': 'LPIPSLoss_drward', 'backbone_path': str(tmp_path / 'vgg16-397923af.pth')})


def test_lpips_loss_loads_a_local_backbone_file(tmp_path):
    import torchvision
    vgg = torchvision.models.vgg16()
    torch.save(vgg.state_dict(), tmp_path / 'vgg16-397923af.pth')
    loss = build_loss({'type': 'LPIPSLoss_drward', 'backbone_path': str(tmp_path / 'vgg16-397923af.pth')})
    torch.testing.assert_close(getattr(loss.model.net.slice3, '10').weight, vgg.features[10].weight)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(x, -x).item() > 0


# ------------------------------------------------------------------------------------------------ CompositeLoss
def test_composite_loss_equals_weighted_sum_of_parts(tiny_reward):
    opts = [{'type': 'L1Loss', 'loss_weight': 1.0},
            {'type': 'DWTLoss', 'loss_weight': 0.01, 'input_range': '[0,1]'},
            {'type': 'RewardLoss', 'loss_weight': 0.005, 'input_range': '[0,1]', 'frm': {'model_name': 'tiny'}}]
    composite = build_loss({'type': 'CompositeLoss', 'losses': opts, 'loss_weight': 2.0})
    pred, target = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    parts = [build_loss(dict(o)) for o in opts]
    parts[2].frm.load_state_dict(composite.parts[2].frm.state_dict())
    expected = 2.0 * sum(p(pred, target) for p in parts)
    torch.testing.assert_close(composite(pred, target), expected)
    assert set(composite.last_terms) == {'L1Loss', 'DWTLoss', 'RewardLoss'}


@pytest.mark.parametrize('loss_type', ['RewardLoss', 'DWTLoss', 'LPIPSLoss_drward', 'RegLoss', 'PreferenceLoss',
                                       'CompositeLoss'])
def test_unknown_loss_option_key_lists_the_accepted_keys(loss_type):
    with pytest.raises(Exception, match=rf"^{loss_type.split('_drward')[0]}: lossweight: unknown key "
                                        r"\(did you mean 'loss_weight'\?\); "
                                        r"accepted keys: \[.*'loss_weight'"):
        build_loss({'type': loss_type, 'lossweight': 1.0})
