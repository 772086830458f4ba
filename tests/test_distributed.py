"""ReFLModel and FRMModel across two processes (gloo on the CPU, ``torch.multiprocessing.spawn``): one model.

Each rank trains on its own faces; at the end both ranks hold the same restorer, FRM and optimiser states; two
ranks of b faces make the update one process makes on 2b faces with the same noise; sharded AdamW states train the
same and their consolidated training state resumes on two ranks and on one process; rank 1 writes nothing.
One spawn runs everything (``dist_helpers.worker``); the tests read what each rank saved.
"""
import os

import dist_helpers as H
import pytest
import torch
import torch.multiprocessing as mp
from tolerances import EPS32, THREAD_COUNTS, TINY_FRM_DEPTH, TINY_FRM_WIDEST, TINY_REWARD_ATOL, rounding_tol

from drward.utils.safe_load import load_training_state

# Two ranks sum the same per-face gradients as one process does, in another order (DDP's all-reduce of each
# rank's gradient vs one process accumulating two micro-batches; a ranks' mean of summed FRM losses vs one sum), and
# the one-process reference runs at 1 and at 2 threads (other matmul blocking): float32 rounding of ~1e-7 of the
# largest gradient element (rounding_tol), which three AdamW steps with eps = 1e-3 (see dist_helpers.EPS) carry
# into the weights as ~1e-8. ATOL = 1e-6 leaves room and still fails on any real difference: a micro-batch left
# out or a mean over one rank only moves weights by ~1e-4 (lr 1e-3). RTOL: each of the ITERS AdamW steps rounds a
# weight once in each path, so two paths may differ by 2·ITERS half-ulps of the weight (the LayerNorm weights ≈ 1).
ATOL, RTOL = 1e-6, 2 * H.ITERS * EPS32


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist')
    both = H.rank_indices(0, H.WORLD * H.PER_RANK)
    initial = H.snapshot(H.build(H.refl_opt(str(root / 'initial'))))
    singles, threads = {}, torch.get_num_threads()
    try:
        for n in THREAD_COUNTS:  # the one-process reference at 1 and at 2 threads (the ranks run at 1)
            torch.set_num_threads(n)
            single = H.build(H.refl_opt(str(root / f'single{n}'), accum=H.WORLD))
            calls = H.record_noise(single)  # the generator's state at each micro-batch: rank r gets micro-batch r's
            H.train_refl(single, both)
            frm_single = H.build(H.frm_opt(str(root / f'single{n}')))
            H.train_frm(frm_single, both)
            singles[n] = {'refl': H.snapshot(single), 'frm': H.snapshot(frm_single, restorer=False)}
    finally:
        torch.set_num_threads(threads)
    noise = [calls[H.WORLD * i:H.WORLD * (i + 1)] for i in range(H.ITERS)]
    mp.spawn(H.worker, args=(str(root), noise), nprocs=H.WORLD, join=True)
    ranks = [torch.load(root / f'results_rank{r}.pt', weights_only=False) for r in range(H.WORLD)]
    return {'root': root, 'initial': initial, 'singles': singles, 'ranks': ranks}


def pairs_of_tensors(a, b, path=''):
    """Every (path, tensor_a, tensor_b) of two nested structures with the same layout."""
    if isinstance(a, torch.Tensor):
        yield path, a, b
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            yield from pairs_of_tensors(a[key], b[key], f'{path}/{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            yield from pairs_of_tensors(x, y, f'{path}/{i}')


def assert_identical(a, b):
    for path, x, y in pairs_of_tensors(a, b):
        assert torch.equal(x, y), path


def assert_close(a, b):
    for path, x, y in pairs_of_tensors(a, b):
        torch.testing.assert_close(x.float(), y.float(), atol=ATOL, rtol=RTOL, msg=path)


def trained(run):
    return {key: run[key] for key in ('g', 'frm', 'optimizers') if key in run}


@pytest.mark.heavy
def test_both_ranks_end_with_the_same_restorer_frm_and_optimiser_states(runs):
    rank0, rank1 = runs['ranks']
    for run in ('refl', 'frm'):
        # after the all-reduce both ranks apply the same gradient with the same kernels: exactly equal
        assert_identical(trained(rank0[run]), trained(rank1[run]))
        assert rank0[run]['log'] == rank1[run]['log']  # averaged over the ranks on every rank
    initial = runs['initial']
    for part in ('g', 'frm'):  # the restorer stepped three times, the FRM once (iteration 2)
        assert all(not torch.equal(initial[part][k], v) for k, v in rank0['refl'][part].items()), part


@pytest.mark.parametrize('threads', THREAD_COUNTS)
def test_two_ranks_of_b_faces_make_the_update_of_one_process_on_2b_faces(runs, threads):
    single, rank0 = runs['singles'][threads], runs['ranks'][0]
    for run in ('refl', 'frm'):
        assert_close(trained(rank0[run]), trained(single[run]))
    # rewards are cosines of unit vectors and the ReFL losses sums of them with weights ≤ 1: unit-scale rounding
    # through the tiny FRM (TINY_REWARD_ATOL ≈ 1.5e-5), against ~1e-2 between faces; a one-ulp relative floor
    for key in ('l_total', 'l_reward', 'l_dwt', 'l_reg', 'reward_restored', 'reward_gt'):
        assert rank0['refl']['log'][key] == pytest.approx(single['refl']['log'][key], rel=2 * EPS32,
                                                           abs=TINY_REWARD_ATOL), key
    # FRMModel: the ranks' mean of their summed losses is half the whole sum; its logits are cosines scaled by
    # exp(logit_scale) (inv_temperature ≈ 14): the same rounding on that scale
    frm_atol = rounding_tol(TINY_FRM_WIDEST, single['frm']['log']['inv_temperature'], TINY_FRM_DEPTH)
    for key in ('l_frm', 'frm_acc'):
        assert rank0['frm']['log'][key] * (H.WORLD if key == 'l_frm' else 1) == pytest.approx(
            single['frm']['log'][key], rel=2 * EPS32, abs=frm_atol), key


def test_sharded_adamw_states_train_the_same_and_resume_on_two_ranks_or_one(runs):
    rank0, rank1 = runs['ranks']
    # ZeRO steps each rank's share with the same AdamW arithmetic (at the scheduler's learning rate), then
    # broadcasts it
    assert_close(trained(rank0['sharded']), trained(rank0['refl']))
    assert_close(trained(rank0['frm_sharded']), trained(rank0['frm']))
    assert_identical(rank1['frm_sharded']['frm'], rank0['frm_sharded']['frm'])
    assert rank1['sharded']['optimizers'] == [None, None]  # consolidated on rank 0 only
    assert_identical(trained(rank0['resumed']), trained(rank0['sharded']))  # 2 ranks, sharded, from the file
    assert_identical(rank1['resumed']['g'], rank0['sharded']['g'])

    root = runs['root']
    opt = H.resumed_opt(str(root), 0, shard=True)
    opt.update(H.dist_keys(0, 1))  # one process: the option is ignored, a plain AdamW takes the whole state
    one = H.build(opt)
    one.resume_training(load_training_state(opt['path']['resume_state']))
    assert_identical(trained(H.snapshot(one)), trained(rank0['sharded']))
    one.feed_data(H.faces(H.ITERS + 1, H.rank_indices(0)))
    one.optimize_parameters(H.ITERS + 1)  # and steps from it
    assert 'l_total' in one.get_current_log()


def test_weights_written_by_collectives_refresh_the_cached_bf16_casts(runs):
    for results in runs['ranks']:
        assert results['caches'] == {'frm_casts_fresh': True, 'zero_step_marks_all': True}


def test_the_memory_budget_counts_the_shares_zero_gives_each_rank(runs):
    from drward.models.frm_optim import frm_param_groups
    from drward.models.parallel import zero_shard_bytes
    model = H.build(H.refl_opt(str(runs['root'] / 'count')))
    groups = [[list(model.net_g.trainable_parameters())],
              [g['params'] for g in frm_param_groups(model.frm, 0.0)]]
    counted = [zero_shard_bytes(g, H.WORLD) for g in groups]  # per optimiser, per rank
    for rank, results in enumerate(runs['ranks']):
        assert results['shares'] == [shares[rank] for shares in counted]


def test_validation_runs_on_every_ranks_share_and_rank_zero_gets_the_one_process_table(runs):
    rank0, rank1 = runs['ranks']
    one = rank0['val_one']
    assert set(one) >= {'reward_restored', 'reward_gt', 'hack_reward_gap', 'hack_hf_ratio'}
    for ranks_table in (rank0['val'], rank1['val']):  # every rank returns the whole table
        assert ranks_table.keys() == one.keys()
        for key, value in one.items():
            # each face restored with the same kernels from the same seed on whichever rank; only the float64 sum
            # over the faces runs in another order: a few ulps of float64
            assert ranks_table[key] == pytest.approx(value, rel=4 * torch.finfo(torch.float64).eps), key


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


def test_only_rank_zero_writes_and_its_state_holds_every_ranks_random_streams(runs):
    root = runs['root']
    assert files_under(root / 'rank1') == []
    written = files_under(root / 'rank0')
    for expected in ('plain/refl/models/net_g_3.safetensors', 'plain/refl/models/net_frm_3.pth',
                     'plain/refl/training_states/3.state', 'plain/refl/visualization/val_faces/0000_3.png',
                     'plain/refl/visualization/val_faces/0001_3.png',  # rank 1's face, written by rank 0
                     'sharded/refl/training_states/3.state', 'frm/models/net_frm_3.pth',
                     'frm/training_states/3.state'):
        assert expected in written
    state = load_training_state(str(root / 'rank0' / 'plain' / 'refl' / 'training_states' / '3.state'))
    streams = state['random']
    assert sorted(streams) == [0, 1]
    sampling = [streams[r]['generators']['restorer_sampling'] for r in (0, 1)]
    assert not torch.equal(*sampling)  # each rank its own noise


def test_launcher_backend_follows_the_option_files_device():
    import basicsr.utils.options

    from drward.utils import basicsr_compat, distributed
    from drward.utils.options import OptionError
    assert (distributed.choose_backend('cpu'), distributed.choose_backend('cuda')) == ('gloo', 'nccl')
    assert not distributed.trains_on_cuda({'num_gpu': 0})  # the tiny option files: gloo even on a GPU machine
    with pytest.raises(OptionError, match='accepted keys'):
        distributed.configure({'dist_params': {'bakend': 'gloo'}})
    basicsr_compat.install()  # BasicSR's parse_options now starts the group with drward's init_dist
    assert basicsr.utils.options.init_dist is distributed.init_dist
