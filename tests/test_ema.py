"""train.ema_decay: an EMA of the restorer's trained part (drward/models/ema.py) — the update rule, the
net_g_ema_<iter> file beside net_g, its loading (resume, BasicSR's param_key params_ema), validation on the EMA
with the training weights put back exactly, no EMA of the FRM, and equal EMAs on two gloo ranks."""
import os

import dist_helpers as H
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from drward.archs.restorer import load_restorer_weights
from drward.models.ema import TrainedPartEMA
from drward.utils.options import OptionError
from drward.utils.safe_load import load_training_state

DECAY = 0.5  # far from 1, so three steps move the EMA visibly away from both the start and the weights


def ema_opt(folder: str, rank: int = 0, world: int = 1) -> dict:
    opt = H.refl_opt(folder, rank, world)
    opt['train']['ema_decay'] = DECAY
    return opt


def weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.net_g.trained_state_dict().items()}


def test_the_ema_follows_its_rule_after_every_step_and_leaves_the_frm_alone(tmp_path):
    model = H.build(ema_opt(str(tmp_path)))
    expected = weights(model)  # θ_ema starts at θ
    assert torch.equal(model.ema.shadow['weight'], expected['weight'])
    for it in range(1, H.ITERS + 1):
        model.feed_data(H.faces(it, [0, 1]))
        model.optimize_parameters(it)
        now = weights(model)
        expected = {k: DECAY * expected[k] + (1 - DECAY) * now[k] for k in now}
        for key in now:  # the same rule computed two ways (in place vs here): rounding only
            assert torch.allclose(model.ema.shadow[key], expected[key], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(model.ema.shadow['weight'], now['weight'])
    frm_ids = {id(p) for p in model.frm.parameters()}
    assert not any(id(t) in frm_ids for t in model.ema.shadow.values()) and len(model.ema.shadow) == len(now)
    with pytest.raises(OptionError, match='ema_decay'):
        TrainedPartEMA(model.net_g, 1.0)


def test_ema_file_is_saved_beside_net_g_and_read_back_on_resume_by_params_ema_and_by_name(tmp_path):
    model = H.build(ema_opt(str(tmp_path / 'run')))
    H.train_refl(model, [0, 1])
    model.save(0, H.ITERS)
    rng = torch.get_rng_state()  # H.build below reseeds the global RNG: the uninterrupted model gets it back
    models = model.opt['path']['models']
    assert sorted(os.listdir(models)) == sorted(f'net_{x}_{H.ITERS}{ext}' for x, ext in (
        ('g', '.safetensors'), ('g_ema', '.safetensors'), ('frm', '.pth')))
    ema = {k: v.clone() for k, v in model.ema.shadow.items()}

    # resume: BasicSR names net_g_<iter>.pth; the EMA comes from the file beside it, bit for bit, and goes on
    opt = ema_opt(str(tmp_path / 'resumed'))
    state = os.path.join(model.opt['path']['training_states'], f'{H.ITERS}.state')
    opt['path'].update(pretrain_network_g=os.path.join(models, f'net_g_{H.ITERS}.pth'), models=models,
                       resume_state=state)
    resumed = H.build(opt)
    resumed.resume_training(load_training_state(state))
    assert all(torch.equal(resumed.ema.shadow[k], ema[k]) for k in ema)
    torch.set_rng_state(rng)
    for run in (model, resumed):
        run.feed_data(H.faces(H.ITERS + 1, [0, 1]))
        run.optimize_parameters(H.ITERS + 1)
    assert all(torch.equal(resumed.ema.shadow[k], model.ema.shadow[k]) for k in ema)
    assert all(torch.equal(v, weights(model)[k]) for k, v in weights(resumed).items())

    # test / restore: BasicSR's param_key params_ema on the net_g path, or the EMA file named directly
    for path, key in ((os.path.join(models, f'net_g_{H.ITERS}.safetensors'), 'params_ema'),
                      (os.path.join(models, f'net_g_ema_{H.ITERS}.safetensors'), 'params')):
        net = H.build(H.refl_opt(str(tmp_path / 'plain'))).net_g
        load_restorer_weights(net, path, key)
        assert all(torch.equal(net.trained_state_dict()[k], ema[k]) for k in ema)
    os.remove(os.path.join(models, f'net_g_ema_{H.ITERS}.safetensors'))
    with pytest.raises(FileNotFoundError, match='no EMA file'):
        load_restorer_weights(net, os.path.join(models, f'net_g_{H.ITERS}.safetensors'), 'params_ema')


def test_validation_restores_with_the_ema_and_puts_the_training_weights_back_exactly(tmp_path):
    model = H.build(ema_opt(str(tmp_path)))
    H.train_refl(model, [0, 1])
    before = weights(model)
    seen = []
    restore = model.net_g.restore

    def recording(*args, **kwargs):
        seen.append(model.net_g.trained_state_dict()['weight'].clone())
        return restore(*args, **kwargs)

    model.net_g.restore = recording
    model.validation(H.val_loader(), H.ITERS, None, False)
    assert seen and all(torch.equal(w, model.ema.shadow['weight']) for w in seen)
    assert all(torch.equal(before[k], v) for k, v in weights(model).items())


def _worker(rank: int, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{root}/rendezvous', rank=rank, world_size=H.WORLD)
    try:
        model = H.build(ema_opt(os.path.join(root, f'rank{rank}'), rank, H.WORLD))
        H.train_refl(model, H.rank_indices(rank))
        model.save(0, H.ITERS)
        torch.save({'ema': model.ema.shadow, 'weights': weights(model)}, os.path.join(root, f'ema_rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


@pytest.mark.heavy
def test_two_gloo_ranks_hold_the_same_ema_and_only_rank_zero_writes_it(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=H.WORLD, join=True)
    ranks = [torch.load(tmp_path / f'ema_rank{r}.pt', weights_only=True) for r in range(H.WORLD)]
    for key, value in ranks[0]['ema'].items():  # same weights, same kernels on each rank: exactly equal
        assert torch.equal(value, ranks[1]['ema'][key])
        assert not torch.equal(value, ranks[0]['weights'][key])
    written = [os.path.isfile(os.path.join(tmp_path, f'rank{r}', 'refl', 'models', f'net_g_ema_{H.ITERS}.safetensors'))
               for r in range(H.WORLD)]
    assert written == [True, False]
