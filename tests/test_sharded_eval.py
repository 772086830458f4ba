"""tools/test.py sharded over 2 ranks (torchrun, gloo, CPU) equals one process: tables, per-image CSV, images, grids;
a sharded run killed in the middle and started again restores only the missing faces and gives the same table.

Images are compared exactly: both runs restore at batch 1 with one thread, the same kernels on the same inputs (at
batch > 1 the shares' batches hold other faces, and only ±1 DN is promised). Metric values: relative 1e-9 (the same
images through the same code; any difference would be a summation order). The set-level metric is FID's formula on
6-D colour statistics (tests/toy_set_metric.py): pyiqa's Inception FID takes minutes on this CPU, and both go
through the same set-level path."""
import csv
import os
import os.path as osp
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from option_files import ROOT
from test_face_test_model import write_pairs
from torchrun_helpers import environment, wait_for, worker_pids
from toy_restorer import ToyRestorer

FACES = 7  # odd: 4 + 3
PORTS = iter(range(29810, 29830))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """7 LQ/GT pairs and two toy checkpoints (the two rows)."""
    root = tmp_path_factory.mktemp('sharded')
    lq, gt = write_pairs(str(root / 'data'), count=FACES, size=32)
    checkpoints = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        checkpoints.append(str(root / f'toy_{seed}.pth'))
        torch.save({'params': ToyRestorer(num_steps=3).trained_state_dict()}, checkpoints[-1])
    return dict(root=root, lq=lq, gt=gt, checkpoints=checkpoints)


def option_file(setup, run: str, delay_s: float = 0.0, batch_size: int = 1) -> str:
    root = setup['root']
    metrics = {'psnr': dict(type='calculate_psnr', crop_border=0, test_y_channel=False),
               'ssim': dict(type='calculate_ssim', crop_border=0, test_y_channel=False),
               'fid': dict(type='calculate_toy_fid', reference='gt')}  # FID's formula on colour statistics
    opt = dict(name='shard', model_type='FaceTestModel', scale=1, num_gpu=0, manual_seed=0,
               host_packages=['toy_restorer', 'toy_set_metric'],
               datasets={'test_1': dict(name='pairs', type='PairedImageDataset', dataroot_lq=setup['lq'],
                                        dataroot_gt=setup['gt'], io_backend={'type': 'disk'}, filename_tmpl='{}')},
               network_g=dict(type='ToyRestorer', num_steps=3, seed=0, delay_s=delay_s),
               compare=dict(label='ReFL', pretrain_network_g=setup['checkpoints'][1]),
               path=dict(results_root=str(root / run / 'results'), restored_root=str(root / run / 'restored'),
                         pretrain_network_g=setup['checkpoints'][0]),
               val=dict(save_img=True, pbar=False, label='base', grids=FACES, batch_size=batch_size,
                        metrics=metrics))
    path = root / f'{run}.yml'
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def command(opt_path: str, processes: int):
    test = [osp.join(ROOT, 'tools', 'test.py'), '-opt', opt_path]
    if processes == 1:
        return [sys.executable, *test]
    return [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', str(processes),
            '--master_addr', '127.0.0.1', '--master_port', str(next(PORTS)), *test, '--launcher', 'pytorch']


def env():
    return environment(PYTHONPATH=os.pathsep.join([ROOT, osp.join(ROOT, 'tests')]))


def evaluate(setup, run: str, processes: int, batch_size: int = 1) -> str:
    result = subprocess.run(command(option_file(setup, run, batch_size=batch_size), processes), capture_output=True,
                            text=True, env=env(), timeout=600, cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return str(setup['root'] / run)


def table_lines(run_dir: str):
    """The markdown table, its restored-folder path made neutral, without the processes note."""
    text = open(osp.join(run_dir, 'results', 'shard', 'pairs_results.md')).read()
    text = text.replace(osp.join(run_dir, 'restored'), '<restored>')
    return [line for line in text.splitlines() if 'restored on ' not in line]


def per_image(run_dir: str):
    with open(osp.join(run_dir, 'results', 'shard', 'pairs_per_image.csv')) as handle:
        return list(csv.reader(handle))


def assert_same_values(rows_a, rows_b):
    assert len(rows_a) == len(rows_b) == 1 + 2 * FACES and rows_a[0] == rows_b[0]
    for a, b in zip(rows_a[1:], rows_b[1:]):
        assert a[:2] == b[:2]
        assert [float(v) for v in a[2:] if v] == pytest.approx([float(v) for v in b[2:] if v], rel=1e-9)


def images(folder: str):
    return {name: cv2.imread(osp.join(folder, name)) for name in sorted(os.listdir(folder)) if name.endswith('.png')}


@pytest.fixture(scope='module')
def one_process(setup):
    return evaluate(setup, 'one', 1)


def test_two_ranks_give_the_one_process_table_per_image_csv_images_and_grids(setup, one_process):
    two = evaluate(setup, 'two', 2)
    assert table_lines(two) == table_lines(one_process)
    table = open(osp.join(two, 'results', 'shard', 'pairs_results.md')).read()
    assert 'restored on 2 processes (4 + 3 faces)' in table and 'restored on' not in table_lines(one_process)
    assert '| base |' in table and '| ReFL |' in table and 'toyFID' in table and 'n/a' not in table
    assert_same_values(per_image(two), per_image(one_process))
    for row in ('base', 'ReFL'):
        mine, theirs = images(osp.join(two, 'restored', row, 'pairs')), images(osp.join(one_process, 'restored',
                                                                                         row, 'pairs'))
        assert len(mine) == FACES and mine.keys() == theirs.keys()
        assert all(np.array_equal(mine[n], theirs[n]) for n in mine)
    grids = [images(osp.join(run, 'results', 'shard', 'visualization', 'pairs')) for run in (two, one_process)]
    assert len(grids[0]) == FACES and all(np.array_equal(grids[0][n], grids[1][n]) for n in grids[1])


def test_two_ranks_in_batches_of_3_stay_within_one_dn_of_one_process_at_batch_1(setup, one_process):
    """Rank 0's 4 faces go as 3 + 1, rank 1's 3 as one batch: other batch sizes, other kernels, so ±1 DN."""
    batched = evaluate(setup, 'batched', 2, batch_size=3)
    for row in ('base', 'ReFL'):
        mine = images(osp.join(batched, 'restored', row, 'pairs'))
        theirs = images(osp.join(one_process, 'restored', row, 'pairs'))
        assert mine.keys() == theirs.keys() and len(mine) == FACES
        assert max(np.abs(mine[n].astype(int) - theirs[n]).max() for n in mine) <= 1


@pytest.mark.heavy
def test_a_sharded_run_killed_in_the_middle_then_rerun_restores_the_rest_and_gives_the_same_table(setup,
                                                                                                 one_process):
    opt_path = option_file(setup, 'killed', delay_s=0.5)
    folder = setup['root'] / 'killed' / 'restored' / 'base' / 'pairs'
    log = open(setup['root'] / 'killed.log', 'w')
    process = subprocess.Popen(command(opt_path, 2), stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
    wait_for(str(folder / 'face_2.png'), process, timeout=300)  # rank 0's second face: in the middle of row 1
    os.kill(worker_pids(process.pid)[1], signal.SIGKILL)
    assert process.wait(timeout=120) != 0
    done = len(images(str(folder)))
    assert 0 < done < FACES and not (setup['root'] / 'killed' / 'restored' / 'ReFL' / 'pairs' / 'face_0.png').exists()
    before = {name: os.stat(folder / name).st_mtime_ns for name in os.listdir(folder) if name.endswith('.png')}
    evaluate_again = subprocess.run(command(opt_path, 2), capture_output=True, text=True, env=env(), timeout=600,
                                    cwd=ROOT)
    assert evaluate_again.returncode == 0, (evaluate_again.stdout + evaluate_again.stderr)[-4000:]
    assert {name: os.stat(folder / name).st_mtime_ns for name in before} == before  # kept, not restored again
    assert len(images(str(folder))) == FACES
    killed = str(setup['root'] / 'killed')
    assert table_lines(killed) == table_lines(one_process)
    assert_same_values(per_image(killed), per_image(one_process))



class _Listed:
    """A dataset that lists its files in a file system's order (not sorted), as BasicSR's paired dataset does."""

    def __init__(self, names):
        self.paths = [{'lq_path': name} for name in names]

    def __len__(self):
        return len(self.paths)


def test_shards_and_seeds_follow_the_sorted_set_whatever_order_the_folder_lists_it_in():
    from drward.models import test_shards
    listed = ['c.png', 'a.png', 'd.png', 'b.png', 'e.png']
    positions = test_shards.sorted_positions(_Listed(listed))
    assert [listed[positions.index(p)] for p in range(5)] == sorted(listed)
    shares = [[listed[i] for i in range(5) if test_shards.mine(positions[i], r, 2)] for r in (0, 1)]
    assert sorted(shares[0]) == ['a.png', 'c.png', 'e.png'] and sorted(shares[1]) == ['b.png', 'd.png']
    assert test_shards.share_sizes(7, 2) == [4, 3] and test_shards.share_sizes(2, 3) == [1, 1, 0]
    assert test_shards.processes_note([4, 3]) == 'restored on 2 processes (4 + 3 faces)'
    assert test_shards.processes_note([7]) is None


def test_merged_shares_give_the_one_process_means_and_an_unavailable_metric_stays_na():
    from drward.metrics.evaluate import ImageScores, finish_scores, merge_image_scores
    opts = {'psnr': {'type': 'calculate_psnr'}, 'musiq': {'type': 'calculate_musiq'}}
    whole = ImageScores({'psnr': {'a': 1.0, 'b': 2.0, 'c': float('nan')}})
    parts = [ImageScores({'psnr': {'a': 1.0, 'c': float('nan')}}, {'musiq': 'n/a (missing w.pth)'}),
             ImageScores({'psnr': {'b': 2.0}}), ImageScores()]  # the third rank had no face
    merged = merge_image_scores(parts)
    one = finish_scores(whole, ['a', 'b', 'c'], True, {'psnr': opts['psnr']}, 'unused', None)
    many = finish_scores(merged, ['c', 'a', 'b'], True, opts, 'unused', None)
    assert many.means['psnr'] == one.means['psnr'] == 1.5 and many.per_image['psnr'][:2] == [1.0, 2.0]
    assert many.means['musiq'] == 'n/a (missing w.pth)' and many.notes == one.notes


def test_basicsr_model_to_device_wraps_a_cpu_network_in_ddp_under_a_launcher(tmp_path):
    """Other models run by tools/test.py --launcher on the CPU: BasicSR asked for torch.cuda.current_device()."""
    import torch.distributed as dist
    from basicsr.models.base_model import BaseModel
    from torch.nn.parallel import DistributedDataParallel

    from drward.models.cli import wrap_ddp_on_the_cpu
    wrap_ddp_on_the_cpu()
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        net = BaseModel({'num_gpu': 0, 'is_train': False, 'dist': True}).model_to_device(torch.nn.Linear(2, 2))
        assert isinstance(net, DistributedDataParallel) and net.device_ids is None
    finally:
        dist.destroy_process_group()
