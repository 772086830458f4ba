"""Write the paper's ablations as option files: ``options/ablations/refl_diffbir_<ablation>[_tiny].yml``.

    python tools/derive_ablations.py [--check]

Each file is its parent (``options/refl_diffbir.yml`` or ``options/refl_diffbir_tiny.yml``) with the smallest change
(:data:`drward.utils.ablations.ABLATIONS`); rerun after editing a parent. ``--check`` writes nothing and exits 1
when a file is missing or out of date.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.utils.ablations import ABLATIONS, PARENTS, derive, derived_name  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='only report files that are missing or out of date')
    args = parser.parse_args()
    out_dir = osp.join(ROOT, 'options', 'ablations')
    os.makedirs(out_dir, exist_ok=True)
    stale = []
    for parent in PARENTS:
        with open(osp.join(ROOT, 'options', f'{parent}.yml'), encoding='utf-8') as handle:
            text = handle.read()
        for ablation in ABLATIONS:
            path = osp.join(out_dir, f'{derived_name(parent, ablation)}.yml')
            wanted = derive(text, parent, ablation)
            current = open(path, encoding='utf-8').read() if osp.exists(path) else None
            if current == wanted:
                continue
            stale.append(path)
            if not args.check:
                with open(path, 'w', encoding='utf-8') as handle:
                    handle.write(wanted)
    verb = 'out of date' if args.check else 'written'
    print('\n'.join(f'{verb}: {osp.relpath(p, ROOT)}' for p in stale) or 'all ablation option files up to date')
    return 1 if stale and args.check else 0


if __name__ == '__main__':
    sys.exit(main())
