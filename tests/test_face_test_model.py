"""FaceTestModel end to end on tiny networks and real demo faces: tables, rerun skip, n/a, compare mode, in the wild."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY
from option_files import load_option_file
from skimage import data
from torch import nn
from toy_restorer import ToyRestorer  # noqa: F401  (registers ToyRestorer)

from drward.data.demo_faces import demo_face_recipes, render_demo_face

TINY_NET = dict(type='SRVGGNetCompact', num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=1)
PSNR_SSIM = {'psnr': dict(type='calculate_psnr', crop_border=0, test_y_channel=False),
             'ssim': dict(type='calculate_ssim', crop_border=0, test_y_channel=False)}


class InvertColours(nn.Module):
    """A "restorer" whose effect is unmistakable: 1 − x."""

    def forward(self, x):
        return 1 - x


if 'InvertColours' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(InvertColours)


def write_pairs(root, count=3, size=64):
    """GT: demo faces; LQ: the same faces blurred. Returns (lq folder, gt folder)."""
    lq_dir, gt_dir = osp.join(root, 'lq'), osp.join(root, 'gt')
    os.makedirs(lq_dir), os.makedirs(gt_dir)
    for index, recipe in enumerate(demo_face_recipes(count)):
        gt = render_demo_face(recipe, size)[..., ::-1]
        cv2.imwrite(osp.join(gt_dir, f'face_{index}.png'), gt)
        cv2.imwrite(osp.join(lq_dir, f'face_{index}.png'), cv2.GaussianBlur(gt, (0, 0), 2))
    return lq_dir, gt_dir


def make_opt(tmp_path, dataset, network=TINY_NET, metrics=PSNR_SSIM, **extra):
    results = tmp_path / 'results' / 'run'
    opt = dict(name='run', model_type='FaceTestModel', scale=1, num_gpu=0, manual_seed=0, is_train=False,
               dist=False, rank=0, world_size=1, datasets={'test_1': dataset}, network_g=dict(network),
               path=dict(results_root=str(results), log=str(results), visualization=str(results / 'visualization'),
                         restored_root=str(tmp_path / 'restored')),
               val=dict(save_img=True, pbar=False, metrics=dict(metrics), label='tiny'))
    for key, value in extra.items():
        opt[key] = value if key != 'val' else {**opt['val'], **value}
    return opt


def paired(lq_dir, gt_dir, name='pairs'):
    return dict(name=name, type='PairedImageDataset', dataroot_lq=lq_dir, dataroot_gt=gt_dir,
                io_backend={'type': 'disk'}, phase='test', scale=1, filename_tmpl='{}')


def run(opt):
    torch.manual_seed(0)  # the toy networks' random (untrained) parts come out the same in every run
    model = build_model(opt)
    for dataset_opt in opt['datasets'].values():
        loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False, sampler=None)
        model.validation(loader, current_iter=opt['name'], tb_logger=None, save_img=opt['val']['save_img'])
    return model


@pytest.fixture
def pairs(tmp_path):
    return write_pairs(str(tmp_path / 'data'))


def test_psnr_ssim_in_the_table_equal_basicsr_on_the_saved_images(tmp_path, pairs, capsys):
    model = run(make_opt(tmp_path, paired(*pairs)))
    row = model.results_tables['pairs'].rows['tiny']
    folder = tmp_path / 'restored' / 'tiny' / 'pairs'
    psnr, ssim = [], []
    for name in sorted(os.listdir(pairs[1])):
        out, gt = cv2.imread(str(folder / name)), cv2.imread(osp.join(pairs[1], name))
        psnr.append(calculate_psnr(out, gt, crop_border=0))
        ssim.append(calculate_ssim(out, gt, crop_border=0))
    assert row['psnr'] == pytest.approx(np.mean(psnr), rel=1e-12)
    assert row['ssim'] == pytest.approx(np.mean(ssim), rel=1e-12)
    results = tmp_path / 'results' / 'run'
    assert (results / 'pairs_results.md').exists() and (results / 'pairs_results.csv').exists()
    assert '| tiny |' in capsys.readouterr().out
    assert len(open(results / 'pairs_per_image.csv').readlines()) == 1 + 3


def test_an_unreadable_input_is_skipped_and_listed_in_the_report(tmp_path, pairs):
    bad = osp.join(pairs[0], 'face_1.png')
    with open(bad, 'r+b') as handle:
        handle.truncate(40)  # a torn download: PNG signature and half a header
    model = run(make_opt(tmp_path, paired(*pairs)))
    table = model.results_tables['pairs']
    assert isinstance(table.rows['tiny']['psnr'], float)  # scored on the two readable faces
    assert any(note.startswith('skipped 1 unreadable input file(s): ') and bad in note for note in table.notes)
    assert bad in open(tmp_path / 'results' / 'run' / 'pairs_results.md').read()
    assert len(open(tmp_path / 'results' / 'run' / 'pairs_per_image.csv').readlines()) == 1 + 2


def test_rerun_skips_images_already_restored_unless_the_checkpoint_changes(tmp_path, pairs):
    opt = make_opt(tmp_path, paired(*pairs), network=dict(type='ToyRestorer', num_steps=4))  # samples noise
    first, second = tmp_path / 'first.pth', tmp_path / 'second.pth'
    torch.save({'params': ToyRestorer(num_steps=4).trained_state_dict()}, first)
    torch.save({'params': ToyRestorer(num_steps=4).trained_state_dict()}, second)
    opt['path']['pretrain_network_g'] = str(first)
    assert run(opt).restore_calls == 3
    saved = tmp_path / 'restored' / 'tiny' / 'pairs' / 'face_1.png'
    before = saved.read_bytes()
    assert run(opt).restore_calls == 0
    assert saved.read_bytes() == before
    saved.unlink()
    assert run(opt).restore_calls == 1 and saved.read_bytes() == before  # per-image seeds: same pixels again
    opt['path']['pretrain_network_g'] = str(second)
    assert run(opt).restore_calls == 3  # another restorer under the same label: restore again


def test_missing_weights_metric_prints_na_with_the_path_and_the_run_finishes(tmp_path, pairs, capsys):
    metrics = {**PSNR_SSIM, 'musiq': dict(type='calculate_musiq', weights_dir=str(tmp_path / 'no_weights')),
               'fid': dict(type='calculate_fid', reference='gt', weights_dir=str(tmp_path / 'no_weights'))}
    model = run(make_opt(tmp_path, paired(*pairs), metrics=metrics))
    printed = capsys.readouterr().out
    missing = tmp_path / 'no_weights' / 'pyiqa' / 'musiq_koniq_ckpt-e95806b9.pth'
    assert f'n/a (missing {missing})' in printed
    assert 'pt_inception-2015-12-05-6726825d.pth' in printed
    assert isinstance(model.results_tables['pairs'].rows['tiny']['psnr'], float)


def test_compare_mode_gives_two_rows_the_relative_change_and_side_by_side_grids(tmp_path, pairs):
    checkpoints = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        path = tmp_path / f'toy_{seed}.pth'
        torch.save({'params': ToyRestorer(num_steps=4).trained_state_dict()}, path)
        checkpoints.append(str(path))
    network = dict(type='ToyRestorer', num_steps=4)
    opt = make_opt(tmp_path, paired(*pairs), network=network, val={'label': 'base', 'grids': 2},
                   compare={'label': 'ReFL', 'pretrain_network_g': checkpoints[1]})
    opt['path']['pretrain_network_g'] = checkpoints[0]
    model = run(opt)
    table = model.results_tables['pairs']
    assert list(table.rows) == ['base', 'ReFL']
    assert table.rows['base']['psnr'] != table.rows['ReFL']['psnr']
    text = table.to_markdown()
    assert '| Δ% ReFL vs base |' in text and ' %' in text
    grids = sorted(os.listdir(tmp_path / 'results' / 'run' / 'visualization' / 'pairs'))
    assert grids == ['face_0_grid.png', 'face_1_grid.png']
    grid = cv2.imread(str(tmp_path / 'results' / 'run' / 'visualization' / 'pairs' / grids[0]))
    assert grid.shape[1] == 4 * 64  # LQ | base | ReFL | GT


def test_in_the_wild_mode_restores_the_face_and_keeps_the_background(tmp_path):
    folder = tmp_path / 'wild'
    folder.mkdir()
    photo = data.astronaut()
    cv2.imwrite(str(folder / 'astronaut.png'), photo[..., ::-1])
    dataset = dict(name='wild', type='SingleImageDataset', dataroot_lq=str(folder), io_backend={'type': 'disk'},
                   phase='test', scale=1)
    opt = make_opt(tmp_path, dataset, network={'type': 'InvertColours'},
                   val={'face_align': {'enabled': True, 'face_size': 128, 'detector': 'dlib'}})
    model = run(opt)
    out = cv2.imread(str(tmp_path / 'restored' / 'tiny' / 'wild' / 'astronaut.png'))[..., ::-1]
    assert out.shape == photo.shape
    assert np.array_equal(out[400:], photo[400:]) and np.array_equal(out[:, :40], photo[:, :40])
    assert np.abs(out[100:140, 200:240].astype(int) - photo[100:140, 200:240]).mean() > 60  # the face is inverted
    assert model.results_tables['wild'].rows['tiny']['psnr'] == 'n/a (no ground truth)'


def test_tiny_option_file_runs_end_to_end_and_writes_the_table(tmp_path, capsys):
    from drward.data.demo_faces import make_demo_faces
    opt = load_option_file('test_celeba_tiny.yml', tmp_path, is_train=False)
    assert opt['num_gpu'] == 'auto'
    opt['num_gpu'] = torch.cuda.device_count()  # what BasicSR's parse_options does with 'auto'
    dataset = opt['datasets']['test_1']
    dataset['gt_size'] = 64  # 2 faces at 64² keep the test short
    make_demo_faces(dataset['dataroot_gt'], size=64, count=2)
    opt['network_g']['num_steps'] = 4
    results = tmp_path / 'results'
    opt['path'].update(results_root=str(results), log=str(results), visualization=str(results / 'visualization'),
                       restored_root=str(tmp_path / 'restored'))
    opt['val']['pbar'] = False
    model = run(opt)
    assert model.net_g.__class__.__name__ == 'DiffBIRRestorer' and model.restore_calls == 2
    table = model.results_tables[dataset['name']]
    assert isinstance(table.rows['tiny-random']['lmd'], float)
    assert table.rows['tiny-random']['musiq'].startswith('n/a (missing ')
    assert (results / f'{dataset["name"]}_results.md').exists()
    assert 'IDS (angle), LMD backend: dlib' in capsys.readouterr().out


@pytest.mark.parametrize('name', ['test_celeba.yml', 'test_celeba_osediff.yml', 'test_lfw.yml', 'test_webphoto.yml',
                                  'test_celeba_tiny.yml'])
def test_option_files_name_registered_metrics_and_only_restorer_weights_stop_the_run(name):
    import yaml
    from basicsr.utils.registry import METRIC_REGISTRY

    from drward.metrics.catalog import CATALOG
    from drward.models.face_test_model import FaceTestModel
    from drward.utils.option_schema import declared_options
    from drward.utils.options import find_missing_weights
    with open(osp.join(osp.dirname(__file__), os.pardir, 'options', name)) as handle:
        opt = yaml.safe_load(handle)
    accepted = declared_options(FaceTestModel, 'val_options')
    assert opt['model_type'] == 'FaceTestModel' and set(opt['val']) <= set(accepted)
    for metric in opt['val']['metrics'].values():
        assert metric['type'] in METRIC_REGISTRY and metric['type'] in CATALOG
    stopping_keys = {key for key, _ in find_missing_weights(opt)}
    assert not any(key.startswith('val.') for key in stopping_keys)  # metric weights give n/a, never a stop
