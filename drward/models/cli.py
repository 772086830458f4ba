"""What ``tools/train.py`` and ``tools/test.py`` do before handing over to BasicSR's pipelines.

Importing this module imports the drward package first, which registers its archs, losses, datasets, metrics and
models: the option check below sees them all.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from drward.models.option_specs import check_option_file
from drward.utils import basicsr_compat, distributed
from drward.utils.options import OptionError, check_weights_before_run, option_file_from_argv
from drward.utils.storage_faults import check_writable
from drward.utils.user_modules import import_user_module

HOST_PACKAGES_KEY = 'host_packages'


def import_host_packages(opt: Optional[dict]) -> List[str]:
    """Import the packages listed under the option file's top-level ``host_packages`` (e.g. ``[gfpgan]``), so their
    archs, datasets and models are registered, as the host's own ``train.py`` does by importing them; returns them.
    An entry may also be a user's own ``.py`` file (relative to the repo root, e.g. a restorer subclass:
    :mod:`drward.utils.user_modules`). A package that is not installed stops the run with one line naming it."""
    names = (opt or {}).get(HOST_PACKAGES_KEY) or []
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise SystemExit(f'option {HOST_PACKAGES_KEY}: a list of package names, got {names!r}')
    for name in names:
        try:
            import_user_module(name, f'option {HOST_PACKAGES_KEY}')
        except OptionError as error:
            raise SystemExit(f'{error}; install it first (docs/hosts.md, "Using drward inside GFPGAN or '
                             'CodeFormer")') from error
    return list(names)


def check_option_values(argv: List[str], opt: Optional[dict]) -> None:
    """Stop with one line when the ``-opt`` file has a value of the wrong type, out of range, or a misspelt key
    (:mod:`drward.models.option_specs`), before anything is built."""
    try:
        check_option_file(opt, os.path.relpath(argv[argv.index('-opt') + 1]) if '-opt' in argv else 'options')
    except OptionError as error:
        raise SystemExit(f'option error: {error}') from None


def output_folders(root: str, opt: Optional[dict], outputs: str) -> List[str]:
    """The folders BasicSR's pipeline writes into: ``experiments`` (with ``tb_logger``) or ``results``, where the
    option file's ``path.experiments_root`` / ``path.results_root`` may move the first."""
    paths = (opt or {}).get('path') or {}
    key = f'{outputs}_root'
    folders = [paths.get(key) or os.path.join(root, outputs)]
    return folders + ([os.path.join(root, 'tb_logger')] if outputs == 'experiments' else [])


def prepare_basicsr_run(root: str, argv: List[str], outputs: Optional[str] = None) -> None:
    """Resolve ``-opt`` against the caller's folder, move to the repo root, check the option values, stop early on
    missing weight files or an output folder (``outputs``: ``experiments`` or ``results``) that cannot be written,
    import the option file's host packages (drward's own components are registered already: see above), make
    BasicSR's resume work on the CPU and its ``--launcher`` choose the process-group backend from the option file's
    device."""
    if '-opt' in argv:
        i = argv.index('-opt') + 1
        if i < len(argv):
            argv[i] = os.path.abspath(argv[i])
    os.chdir(root)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    opt = option_file_from_argv(argv)
    import_host_packages(opt)  # first, so that the check sees their registered classes (drward's names never clash)
    check_option_values(argv, opt)  # types, ranges and key names first: one line, nothing built
    if outputs:  # then the folders it will write into: not an hour later at the first save
        check_writable(output_folders(root, opt, outputs), os.path.basename(argv[0]))
    check_weights_before_run(argv)
    distributed.configure(opt)  # --launcher: gloo on the CPU, nccl on CUDA
    basicsr_compat.install()
    wrap_ddp_on_the_cpu()
    sys.argv = argv


def wrap_ddp_on_the_cpu() -> None:
    """Make BasicSR's ``BaseModel.model_to_device`` work under ``--launcher`` on the CPU (gloo): it passes
    ``device_ids=[torch.cuda.current_device()]`` to DDP, which fails without CUDA; a CPU module is wrapped with
    ``device_ids=None``, as DDP wants for CPU modules. CUDA models keep BasicSR's own code. (FaceTestModel wraps
    nothing: it trains nothing.)"""
    from basicsr.models.base_model import BaseModel
    if getattr(BaseModel.model_to_device, 'drward_cpu_ddp', False):
        return
    original = BaseModel.model_to_device

    def model_to_device(self, net):
        if not (self.opt.get('dist') and self.device.type == 'cpu'):
            return original(self, net)
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(net.to(self.device),
                                       find_unused_parameters=self.opt.get('find_unused_parameters', False))
    model_to_device.drward_cpu_ddp = True
    BaseModel.model_to_device = model_to_device
