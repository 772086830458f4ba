"""Build one real-size component from a weights folder, as the real option files do, and time it.

    python -m drward.weights.synthetic /scratch/weights            # real-size random files (once)
    flock /tmp/drward-bigmem.lock /usr/bin/time -v \
        python benchmarks/load_real_weights.py /scratch/weights diffbir   # or osediff, frm, lpips

The component is built from the option file's own section, with its ``weights/`` paths pointed at the folder:
``diffbir`` and ``osediff`` from ``network_g`` of ``options/refl_diffbir.yml`` / ``refl_osediff.yml``, ``frm``
from ``network_frm`` of ``options/train_frm.yml`` (the HPS v2 file), ``lpips`` from ``train.lpips_opt`` of
``options/refl_diffbir.yml`` with ``backbone_path`` set to the folder's VGG16 file. Prints seconds and the peak
RSS (``ru_maxrss``); each real-size build needs several GiB, so run one at a time (the ``flock`` above).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Dict, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import yaml  # noqa: E402

from drward.weights.synthetic import FILES  # noqa: E402

# component -> (option file, path of its section in that file)
SECTIONS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    'diffbir': ('refl_diffbir.yml', ('network_g',)),
    'osediff': ('refl_osediff.yml', ('network_g',)),
    'frm': ('train_frm.yml', ('network_frm',)),
    'lpips': ('refl_diffbir.yml', ('train', 'lpips_opt')),
}


def section_options(component: str, folder: str) -> Dict:
    """The component's option section with each ``weights/<file>`` value pointed at ``folder/<file>``."""
    name, keys = SECTIONS[component]
    with open(os.path.join(ROOT, 'options', name)) as handle:
        opt = yaml.safe_load(handle)
    for key in keys:
        opt = opt[key]
    opt = {k: (os.path.join(folder, os.path.basename(v)) if isinstance(v, str) and v.startswith('weights/') else v)
           for k, v in opt.items()}
    if component == 'lpips':
        opt['backbone_path'] = os.path.join(folder, FILES['vgg16'])
    return opt


def build(component: str, opt: Dict) -> torch.nn.Module:
    """Construct the component as BasicSR would from ``opt`` (``type`` names the registered class)."""
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY

    import drward.archs  # noqa: F401  (registers the archs)
    import drward.losses  # noqa: F401  (registers the losses)
    opt = dict(opt)
    cls = (LOSS_REGISTRY if component == 'lpips' else ARCH_REGISTRY).get(opt.pop('type'))
    return cls(**opt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('folder', help='folder with the (real-size) weight files')
    parser.add_argument('component', choices=list(SECTIONS))
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    opt = section_options(args.component, os.path.abspath(args.folder))
    start = time.perf_counter()
    module = build(args.component, opt)
    seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in module.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
    print(f'{args.component}: built {type(module).__name__} ({parameters / 1e6:.0f} M parameters) in {seconds:.1f} s, '
          f'peak RSS {peak:.2f} GiB')


if __name__ == '__main__':
    main()
