"""Two-process runs (gloo, CPU) of ReFLModel and FRMModel for ``tests/test_distributed.py``.

One ``torch.multiprocessing.spawn`` of :func:`worker` trains, in each of two ranks, on that rank's own faces:
ReFL (toy restorer + tiny FRM) with plain AdamW, the same with sharded AdamW states (then resumed from the
consolidated state on both ranks), and FRMModel with plain and with sharded AdamW states. Every rank saves what it ended
with to ``<root>/results_rank<r>.pt``; rank ``r`` writes its run folders under ``<root>/rank<r>/`` so that a test can
see that rank 1 wrote nothing. The single-process references run in the test process with the same helpers.
"""
import os
import types

import torch
import torch.distributed as dist
import toy_restorer  # noqa: F401  (registers ToyRestorer)
from basicsr.models import build_model

import drward  # noqa: F401  (a spawned process registers drward's models itself)

WORLD = 2
PER_RANK = 2        # faces (or pairs) per rank and iteration
ITERS = 3
FRM_EVERY = 2       # the dynamic FRM update runs at iteration 2
SIZE = 32
#: AdamW's eps in these runs. Per element AdamW moves a weight by lr·m/(√v + eps): for an element whose gradient is
#: near zero (many are, in tiny random models; the attention key biases' are exactly zero in exact arithmetic)
#: a rounding difference δg of the gradient (~1e-7 of the largest gradient element: two ranks sum in another
#: order than one process) moves it by up to lr·δg/eps — 1e4·lr·δg with the official 1e-8, enough to make two
#: summation orders look like two trainings. With eps = 1e-3 that bound is 0.5·δg per step (~1e-8 here), so
#: comparing the two paths compares the training, not the noise; the states are AdamW's all the same.
EPS = 1e-3


def run_paths(root: str, name: str) -> dict:
    folder = os.path.join(root, name)
    paths = {key: os.path.join(folder, key) for key in ('models', 'training_states', 'visualization')}
    for path in paths.values():
        os.makedirs(path, exist_ok=True)
    return {**paths, 'experiments_root': folder, 'log': folder, 'resume_state': None}


def dist_keys(rank, world):
    return {'dist': world > 1, 'rank': rank, 'world_size': world, 'is_train': True, 'num_gpu': 0, 'manual_seed': 0}


def refl_opt(folder: str, rank: int = 0, world: int = 1, accum: int = 1, shard: bool = False) -> dict:
    """ReFL on the toy restorer with a tiny FRM; ``accum`` micro-batches per iteration."""
    return {'name': 'dist_refl', 'model_type': 'ReFLModel', **dist_keys(rank, world),
            'network_g': {'type': 'ToyRestorer', 'num_steps': 4},
            'path': {**run_paths(folder, 'refl'), 'pretrain_network_g': None},
            'train': {'grad_accum': accum, 'shard_optimizer_states': shard,
                      'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.01, 'eps': EPS},
                      'reward_opt': {'type': 'RewardLoss', 'loss_weight': 1.0, 'frm': {'model_name': 'tiny'}},
                      'dwt_opt': {'type': 'DWTLoss', 'loss_weight': 0.01},
                      'reg_opt': {'type': 'RegLoss', 'loss_weight': 1e-4},
                      'frm_update': {'every': FRM_EVERY, 'optim': {'lr': 1e-4, 'weight_decay': 0.35, 'eps': EPS}}},
            'val': {'seed': 0}}


def frm_opt(folder: str, rank: int = 0, world: int = 1, shard: bool = False) -> dict:
    """FRMModel on a tiny FRM, with warm-up and a cosine schedule (the learning rate changes every step)."""
    return {'name': 'dist_frm', 'model_type': 'FRMModel', **dist_keys(rank, world),
            'network_frm': {'type': 'FaceRewardModel', 'model_name': 'tiny', 'unlocked_image_groups': 3,
                            'unlocked_text_layers': 2},
            'path': {**run_paths(folder, 'frm'), 'pretrain_network_frm': None},
            'train': {'warmup_iter': 2, 'grad_clip': 1.0, 'optim_frm': {'lr': 5e-4, 'eps': EPS},
                      'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [ITERS], 'eta_min': 1e-5},
                      'shard_optimizer_states': shard, 'pref_opt': {'type': 'PreferenceLoss', 'reduction': 'sum'}},
            'val': {'val_freq': 100}}


def faces(it: int, indices) -> dict:
    """Faces by global index: face ``i`` of iteration ``it`` is the same in any split of the batch."""
    gts, lqs = [], []
    for i in indices:
        g = torch.Generator().manual_seed(1000 * it + i)
        gt = torch.rand(3, SIZE, SIZE, generator=g)
        gts.append(gt)
        lqs.append((gt + 0.2 * torch.randn(3, SIZE, SIZE, generator=g)).clamp(0, 1))
    return {'lq': torch.stack(lqs), 'gt': torch.stack(gts), 'caption': [f'face {i}' for i in indices]}


def pairs(it: int, indices) -> dict:
    imgs = [torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5000 + 1000 * it + i))
            for i in indices]
    return {'img_a': torch.stack([x[0] for x in imgs]), 'img_b': torch.stack([x[1] for x in imgs]),
            'caption': [f'face {i}' for i in indices], 'label': torch.tensor([float(i % 2) for i in indices])}


def rank_indices(rank: int, per_rank: int = PER_RANK):
    return list(range(rank * per_rank, (rank + 1) * per_rank))


def record_noise(model) -> list:
    """Make ``model`` record its sampling generator's state before every restoration (one per micro-batch)."""
    states, restore = [], model.net_g.restore

    def recording(*args, **kwargs):
        states.append(kwargs['generator'].get_state())
        return restore(*args, **kwargs)

    model.net_g.restore = recording
    return states


def train_refl(model, indices, noise=None) -> None:
    """``ITERS`` iterations on the faces ``indices``; ``noise[it - 1]``: the generator state to start each from."""
    for it in range(1, ITERS + 1):
        if noise is not None:
            model.generator.set_state(noise[it - 1])
        model.feed_data(faces(it, indices))
        model.optimize_parameters(it)


def train_frm(model, indices) -> None:
    for it in range(1, ITERS + 1):
        model.update_learning_rate(it, warmup_iter=model.opt['train']['warmup_iter'])  # as BasicSR's loop does
        model.feed_data(pairs(it, indices))
        model.optimize_parameters(it)


def optimizer_states(model) -> list:
    """Every optimiser's whole state dict (sharded ones consolidated on rank 0: a collective; None elsewhere)."""
    from drward.models.parallel import consolidate, is_sharded
    consolidate(model.optimizers)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return [None if is_sharded(o) and rank else o.state_dict() for o in model.optimizers]


def snapshot(model, restorer: bool = True) -> dict:
    frm = model.frm
    out = {'frm': {n: p.detach().clone() for n, p in frm.named_parameters() if p.requires_grad},
           'optimizers': optimizer_states(model), 'log': dict(model.log_dict)}
    if restorer:
        out['g'] = {k: v.detach().clone() for k, v in model.net_g.trained_state_dict().items()}
    return out


class _Loader(list):
    """A list of batches with the ``dataset.opt['name']`` validation reads."""

    def __init__(self, items, name: str):
        super().__init__(items)
        self.dataset = types.SimpleNamespace(opt={'name': name})


def val_loader() -> list:
    return _Loader([faces(0, [i]) for i in range(2)], 'val_faces')


def build(opt: dict):
    """``build_model`` from the same global RNG state in every process (the toy restorer and the tiny FRM are
    initialised from it), so rank 0 starts where the single-process reference does."""
    torch.manual_seed(0)
    return build_model(opt)


def local_share_bytes(optimizer) -> int:
    """Bytes of the parameters whose states this rank's ZeroRedundancyOptimizer keeps."""
    return sum(p.numel() * p.element_size() for group in optimizer.optim.param_groups for p in group['params'])


def resumed_opt(root: str, rank: int, shard: bool) -> dict:
    """Options resuming rank 0's sharded run at iteration ``ITERS`` (every rank reads rank 0's files)."""
    opt = refl_opt(os.path.join(root, f'rank{rank}', 'resumed'), rank, WORLD, shard=shard)
    run = os.path.join(root, 'rank0', 'sharded', 'refl')
    opt['path'].update(resume_state=os.path.join(run, 'training_states', f'{ITERS}.state'),
                       models=os.path.join(run, 'models'),
                       pretrain_network_g=os.path.join(run, 'models', f'net_g_{ITERS}.pth'))
    return opt


def collective_writes_reach_caches(rank: int, sharded) -> dict:
    """Caches keyed by version counters (bf16 casts) see what collectives wrote: a broadcast FRM (each rank built
    another one first), and the parameters a sharded optimiser's step received from the other rank."""
    from drward.archs.frm_arch import build_frm
    from drward.utils.distributed import broadcast_module_
    torch.manual_seed(rank)
    frm = build_frm({'model_name': 'tiny', 'weight_dtype': 'bf16'})
    frm._detached_parameters()  # this rank's own weights, cast and cached
    broadcast_module_(frm)
    casts = frm._detached_parameters()
    fresh = all(torch.equal(casts[n], p.detach().to(torch.bfloat16)) for n, p in frm.clip.named_parameters())
    params = list(sharded.net_g.trainable_parameters())
    versions = [p._version for p in params]
    sharded.optimizer_g.step()
    return {'frm_casts_fresh': fresh, 'zero_step_marks_all': all(p._version > v for p, v in zip(params, versions))}


def one_process_validation(model) -> dict:
    """``model``'s validation as one process runs it (every face here), inside a two-rank run."""
    from unittest import mock

    from drward.utils import distributed
    with mock.patch.object(distributed, 'is_dist', lambda: False), \
            mock.patch.object(distributed, 'world_size', lambda: 1), mock.patch.object(distributed, 'rank', lambda: 0):
        return model.validator.run(val_loader(), ITERS, None, False)


def worker(rank: int, root: str, noise: list) -> None:
    """One rank: the three runs of the module docstring; results to ``<root>/results_rank<rank>.pt``."""
    from drward.utils.safe_load import load_training_state
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{root}/rendezvous', rank=rank, world_size=WORLD)
    try:
        mine = os.path.join(root, f'rank{rank}')
        results = {}
        model = build(refl_opt(os.path.join(mine, 'plain'), rank, WORLD))
        train_refl(model, rank_indices(rank), [states[rank] for states in noise])
        results['refl'] = snapshot(model)
        model.save(0, ITERS)
        model.validation(val_loader(), ITERS, None, True)
        results['val'] = model.validator.run(val_loader(), ITERS, None, False)  # each rank its share, summed
        results['val_one'] = one_process_validation(model) if rank == 0 else None

        sharded = build(refl_opt(os.path.join(mine, 'sharded'), rank, WORLD, shard=True))
        train_refl(sharded, rank_indices(rank), [states[rank] for states in noise])
        results['sharded'] = snapshot(sharded)
        results['shares'] = [local_share_bytes(o) for o in sharded.optimizers]
        sharded.save(0, ITERS)
        dist.barrier()  # rank 0's files are complete before both ranks resume from them
        opt = resumed_opt(root, rank, shard=True)
        resumed = build(opt)
        resumed.resume_training(load_training_state(opt['path']['resume_state']))
        results['resumed'] = snapshot(resumed)
        results['caches'] = collective_writes_reach_caches(rank, sharded)

        frm_model = build(frm_opt(mine, rank, WORLD))
        train_frm(frm_model, rank_indices(rank))
        results['frm'] = snapshot(frm_model, restorer=False)
        frm_model.save(0, ITERS)
        frm_sharded = build(frm_opt(os.path.join(mine, 'frm_sharded'), rank, WORLD, shard=True))
        train_frm(frm_sharded, rank_indices(rank))
        results['frm_sharded'] = snapshot(frm_sharded, restorer=False)
        torch.save(results, os.path.join(root, f'results_rank{rank}.pt'))
    finally:
        dist.destroy_process_group()
