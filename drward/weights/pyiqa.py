"""pyiqa metrics from a local weights folder: no download, and a one-line error naming the missing file.

pyiqa fetches its weights on first use; here nothing can be fetched. A *weights folder* laid out like the torch hub
cache (``torch.hub.get_dir()``, the default) is used instead::

    <weights_dir>/pyiqa/<pyiqa file>        pyiqa's own checkpoints (e.g. musiq_koniq_ckpt-e95806b9.pth)
    <weights_dir>/clip/<CLIP file>          OpenAI CLIP backbones (RN50.pt, ViT-L-14.pt)
    <weights_dir>/checkpoints/<file>        torchvision backbones (alexnet-owt-7be5be79.pth, vgg16-397923af.pth)

:data:`REQUIRED_FILES` lists what each metric reads; :func:`create_pyiqa_metric` checks them first (raising
:class:`~drward.utils.options.MissingWeightsError` with the first missing path and its official URL), then builds the
metric with pyiqa's cache, the torch hub dir and CLIP's download root pointed at the folder. MANIQA's ViT backbone
is built without its (redundant) timm download: the MANIQA checkpoint holds the whole network.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from drward.utils.options import MissingWeightsError
from drward.utils.safe_load import forced_weights_only

_PYIQA_URL = 'https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/'
_CLIP_URL = 'https://openaipublic.azureedge.net/clip/models/ (see pyiqa/archs/clip_model.py)'
_TORCHVISION_URL = 'https://download.pytorch.org/models/'

# metric name (pyiqa's) -> files it reads, relative to the weights folder
REQUIRED_FILES: Dict[str, Tuple[str, ...]] = {
    'musiq': ('pyiqa/musiq_koniq_ckpt-e95806b9.pth',),
    'maniqa': ('pyiqa/ckpt_koniq10k.pt',),
    'clipiqa': ('clip/RN50.pt',),
    'clipiqa+': ('clip/RN50.pt', 'pyiqa/CLIP-IQA+_learned_prompts-603f3273.pth'),
    'laion_aes': ('clip/ViT-L-14.pt', 'pyiqa/sac+logos+ava1-l14-linearMSE.pth'),
    'fid': ('pyiqa/pt_inception-2015-12-05-6726825d.pth',),
    'fid_ffhq_stats': ('pyiqa/ffhq_clean_trainval70k_512.npz',),
    'topiq_nr-face': ('pyiqa/topiq_nr_cgfiqa_res50-0a8b8e4f.pth',),
    'niqe': ('pyiqa/niqe_modelparameters.mat',),
    'lpips_alex': ('checkpoints/alexnet-owt-7be5be79.pth',),
    'lpips_vgg': ('checkpoints/vgg16-397923af.pth',),
}
# metrics that need no file at all
WEIGHTLESS = ('psnr', 'psnry', 'ssim', 'ssimc', 'ms_ssim', 'brisque')


def default_weights_dir() -> str:
    """The torch hub cache folder, where pyiqa, CLIP and torchvision would have downloaded their files."""
    return torch.hub.get_dir()


def official_url(relative_path: str) -> str:
    folder, name = os.path.split(relative_path)
    if folder == 'pyiqa':
        return _PYIQA_URL + name
    if folder == 'clip':
        return _CLIP_URL
    return _TORCHVISION_URL + name


def missing_files(name: str, weights_dir: str) -> List[str]:
    """The files of metric ``name`` absent from ``weights_dir`` (absolute paths)."""
    return [os.path.join(weights_dir, rel) for rel in REQUIRED_FILES.get(name, ())
            if not os.path.isfile(os.path.join(weights_dir, rel))]


def require_metric_files(name: str, weights_dir: str, option_key: str) -> None:
    """Raise :class:`MissingWeightsError` (one line: path, option key, official URL) if a file of ``name`` is absent."""
    absent = missing_files(name, weights_dir)
    if absent:
        relative = os.path.relpath(absent[0], weights_dir)
        raise MissingWeightsError(f'missing weight file {absent[0]} (option key {option_key}); '
                                  f'official file: {official_url(relative)}')


@contextlib.contextmanager
def local_weights(weights_dir: str) -> Iterator[None]:
    """Point pyiqa's cache, the torch hub dir (CLIP, torchvision) at ``weights_dir``; build timm models untrained;
    every ``torch.load`` inside is ``weights_only=True``."""
    import timm
    from pyiqa.utils import download_util
    saved_hub, saved_cache, saved_timm = torch.hub.get_dir(), download_util.DEFAULT_CACHE_DIR, timm.create_model

    def create_untrained(*args, **kwargs):
        kwargs['pretrained'] = False
        return saved_timm(*args, **kwargs)

    torch.hub.set_dir(weights_dir)
    download_util.DEFAULT_CACHE_DIR = os.path.join(weights_dir, 'pyiqa')
    timm.create_model = create_untrained
    try:
        with forced_weights_only():  # pyiqa reads some of its files with weights_only=False
            yield
    finally:
        torch.hub.set_dir(saved_hub)
        download_util.DEFAULT_CACHE_DIR = saved_cache
        timm.create_model = saved_timm


def create_pyiqa_metric(name: str, weights_dir: Optional[str] = None, option_key: str = 'weights_dir',
                        device: str = 'cpu', pretrained: bool = True, **options):
    """``pyiqa.create_metric(name)`` from local files only. ``pretrained=False``: random weights (tests only)."""
    import pyiqa
    weights_dir = weights_dir or default_weights_dir()
    if pretrained:
        require_metric_files(name, weights_dir, option_key)
    else:
        options['pretrained'] = False
    with local_weights(weights_dir):
        return pyiqa.create_metric(name, device=torch.device(device), as_loss=False, **options)
