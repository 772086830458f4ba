"""A restorer of one's own, in ONE file: this one. It subclasses DiffBIRRestorer, declares the one option key it
adds, and runs through an option file, tools/train.py and tools/restore.py with no other file of the repo edited
(the option file's ``host_packages`` names this file; docs/design.md §3).

The restorer: DiffBIR followed by an unsharp mask, ``Î_s = Î + a·(Î − box3(Î))``, ``a`` = ``sharpen``. It inherits
every key of DiffBIRRestorer (and of Restorer); the option check and the constructor check ``sharpen`` too.
"""
import copy
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY

from drward.archs.diffbir_arch import DiffBIRRestorer
from drward.utils.option_schema import Num, Option, declared_options
from drward.utils.registry import register

# tools/train.py and tools/restore.py import this file by path (host_packages): test helpers are imported inside
# the tests


@register(ARCH_REGISTRY)
class SharpenedDiffBIRRestorer(DiffBIRRestorer):
    """DiffBIR, then ``Î_s = Î + a·(Î − box3(Î))`` (differentiable; in training and at inference)."""

    options = {'sharpen': Option(Num(0, 1), 0.0, 'unsharp-mask amount a (0: plain DiffBIR)')}

    def restore(self, lq, captions=None, grad_steps=0, generator=None, **sampling):
        out = super().restore(lq, captions, grad_steps, generator, **sampling)
        blurred = F.avg_pool2d(out.image, 3, stride=1, padding=1, count_include_pad=False)
        out.image = out.image + self.opt['sharpen'] * (out.image - blurred)
        return out


def option_file(tmp_path, **network):
    """options/refl_diffbir_tiny.yml with this restorer as network_g (K = 2) and this file in host_packages."""
    from option_files import read_option_file
    opt = read_option_file('refl_diffbir_tiny.yml')
    opt['host_packages'] = [os.path.abspath(__file__)]
    opt['network_g'].update({'type': 'SharpenedDiffBIRRestorer', 'num_steps': 2, 'sharpen': 0.5, **network})
    return opt


def test_the_subclass_inherits_its_parents_keys_and_declares_its_own():
    parent, child = declared_options(DiffBIRRestorer), declared_options(SharpenedDiffBIRRestorer)
    assert set(child) == set(parent) | {'sharpen'} and 'sharpen' not in parent
    assert child['num_steps'] is parent['num_steps'] and child['sharpen'].default == 0.0


def test_the_option_check_covers_the_inherited_keys_and_the_new_one(tmp_path):
    from drward.models.option_specs import check_option_file
    from drward.utils.options import OptionError
    check_option_file(option_file(tmp_path), 'x.yml')
    cases = [({'sharpen': 2}, 'x.yml: network_g.sharpen: got 2 (int); accepted: a number >= 0 <= 1'),
             ({'num_steps': 0}, 'x.yml: network_g.num_steps: got 0 (int); accepted: an integer >= 1 <= 1000'),
             ({'sharpn': 0.5}, "x.yml: network_g.sharpn: unknown key (did you mean 'sharpen'?)")]
    for change, line in cases:
        opt = option_file(tmp_path, **change)
        with pytest.raises(OptionError) as error:
            check_option_file(opt, 'x.yml')
        assert str(error.value).startswith(line) and '\n' not in str(error.value), str(error.value)


def test_the_constructor_checks_the_new_key_and_the_sharpening_is_applied():
    from drward.utils.options import OptionError
    with pytest.raises(OptionError, match=r"^SharpenedDiffBIRRestorer: sharpen: got 'lots' \(str\); accepted: "):
        SharpenedDiffBIRRestorer(tiny=True, sharpen='lots')
    lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for amount in (0.0, 0.5):
        net = SharpenedDiffBIRRestorer(tiny=True, num_steps=2, sharpen=amount).eval()
        with torch.no_grad():
            outputs[amount] = net.restore(lq, generator=torch.Generator().manual_seed(1)).image
    plain = outputs[0.0]
    expected = plain + 0.5 * (plain - F.avg_pool2d(plain, 3, stride=1, padding=1, count_include_pad=False))
    # same seeds, same weights, same kernels: the one difference is the formula, computed here a second time
    torch.testing.assert_close(outputs[0.5], expected, rtol=1e-5, atol=1e-5)
    assert float((outputs[0.5] - plain).abs().max()) > 1e-3


def test_tools_restore_builds_it_from_the_option_file(tmp_path):
    from option_files import write_options
    from test_restore_tool import run_restore
    faces = tmp_path / 'faces'
    faces.mkdir()
    cv2.imwrite(str(faces / 'face.png'), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    opt_path = write_options(option_file(tmp_path), tmp_path / 'sharpened.yml')
    result = run_restore('-i', faces, '-o', tmp_path / 'out', '--opt', opt_path, '--aligned', '--face-size', 64,
                         '--no-progress')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'SharpenedDiffBIRRestorer' in (tmp_path / 'out' / 'summary.txt').read_text()
    assert cv2.imread(str(tmp_path / 'out' / 'restored_imgs' / 'face.png')).shape == (64, 64, 3)


def test_tools_train_trains_it_from_the_option_file(tmp_path):
    import shutil

    from option_files import ROOT, run_tools_train, short_training_option, write_options
    name = f'pytest_custom_restorer_{os.getpid()}'
    opt = short_training_option('refl_diffbir_tiny.yml', tmp_path, name, total_iter=2, every=2)
    network = copy.deepcopy(option_file(tmp_path))
    opt.update(host_packages=network['host_packages'], network_g=network['network_g'])
    exp = os.path.join(ROOT, 'experiments', name)
    try:
        result = run_tools_train(write_options(opt, tmp_path / 'sharpened_train.yml'))
        assert result.returncode == 0, result.stderr[-3000:]
        assert 'SharpenedDiffBIRRestorer' in result.stdout + result.stderr
        assert os.path.exists(os.path.join(exp, 'models', 'net_g_2.safetensors'))
    finally:
        shutil.rmtree(exp, ignore_errors=True)
        shutil.rmtree(os.path.join(ROOT, 'tb_logger', name), ignore_errors=True)
