"""Fetch and verify every weight file the option files need (SD 2.1-base, DiffBIR, HPS v2, OSEDiff, the
DiffusionReward release, VGG16), into the paths the option files name.

    python tools/download_weights.py                          # every real option file (options/*.yml, not *tiny*)
    python tools/download_weights.py -opt options/refl_diffbir.yml
    python tools/download_weights.py --all --dir weights      # every file of the manifest, into weights/
    python tools/download_weights.py --check                  # verify what is there, fetch nothing
    python tools/download_weights.py --mirror https://my.mirror --manifest M.yml --dir D

Each download is checked (sha256, else git blob sha1, else size) before it is moved into place; the closing table
says how each file was verified (files without any published hash or size say "not verified"). The manifest is
drward/weights/manifest.yml; ``--mirror URL`` (or $DRWARD_WEIGHTS_MIRROR) fetches ``https://HOST/PATH?QUERY`` from
``URL/HOST/PATH?QUERY``. Exit status: 0 when every file is in place (and, with --check, verified), else 1.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', nargs='+', default=[], metavar='OPT.yml', help='option files whose weights to fetch '
                        '(default: every real option file, unless --manifest or --all is given)')
    parser.add_argument('--all', action='store_true', help='every file of the manifest, into --dir')
    parser.add_argument('--dir', default='weights', help='folder for --all / --manifest files (default: weights)')
    parser.add_argument('--check', action='store_true', help='only verify the files that are there; fetch nothing')
    parser.add_argument('--manifest', help='another manifest (same YAML format as drward/weights/manifest.yml)')
    parser.add_argument('--mirror', help='fetch https://HOST/PATH from MIRROR/HOST/PATH (or $DRWARD_WEIGHTS_MIRROR)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser.parse_args(argv)


def plan(args, manifest) -> tuple:
    """``[(WeightFile, destination)]`` and the option-file paths that are not published files."""
    from drward.weights.manifest import files_for_options, real_option_files
    option_files = [osp.abspath(p) for p in args.opt]
    if not option_files and not args.all and not args.manifest:
        option_files = real_option_files(osp.join(ROOT, 'options'))
    wanted, unknown = files_for_options(option_files, manifest, ROOT)
    if args.all or (args.manifest and not args.opt):
        named = {dest for _, dest in wanted}
        wanted += [(wf, osp.abspath(osp.join(args.dir, wf.name))) for wf in manifest
                   if osp.abspath(osp.join(args.dir, wf.name)) not in named]
    return wanted, unknown


def human(size) -> str:
    if size is None:
        return '-'
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if size < 1024 or unit == 'GiB':
            return f'{size:.0f} {unit}' if unit == 'B' else f'{size:.2f} {unit}'
        size /= 1024


def shown(path: str) -> str:
    """A path relative to the current folder when it is under it, else absolute."""
    rel = osp.relpath(path)
    return path if rel.startswith(osp.pardir) else rel


def table(outcomes) -> str:
    rows = [('file', 'status', 'source used', 'size', 'verified by')]
    rows += [(shown(o.dest), o.status, o.source or '-', human(o.size), o.verified_by) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ['  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from drward.utils.options import OptionError
    from drward.weights.download import check_file, fetch_file, mirror_from_env
    from drward.weights.manifest import load_manifest
    try:
        manifest = load_manifest(args.manifest)
        wanted, unknown = plan(args, manifest)
    except (OptionError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 1
    mirror = mirror_from_env(args.mirror)
    for option_file, key, path in unknown:
        print(f'{shown(option_file)}: {key} = {path} is not a published file (a run makes it); skipped')
    print(f'{len(wanted)} weight file(s){" from mirror " + mirror if mirror else ""}'
          f'{" (check only)" if args.check else ""}', flush=True)
    outcomes = []
    for wf, dest in wanted:
        if args.check:
            outcome = check_file(wf, dest, not args.no_progress)
        else:
            print(f'- {wf.name} -> {shown(dest)}', flush=True)
            outcome = fetch_file(wf, dest, mirror, not args.no_progress)
        for error in outcome.errors:
            print(f'  error: {error}', file=sys.stderr, flush=True)
        outcomes.append(outcome)
    print(table(outcomes))
    unverified = [o.name for o in outcomes
                  if o.verified_by == 'not verified' and o.status in ('fetched', 'present', 'ok')]
    if unverified:
        print(f'not verified (no hash or size published): {", ".join(unverified)}')
    bad = [o for o in outcomes if o.status not in ('fetched', 'present', 'ok')]
    if bad:
        print(f'{len(bad)} file(s) not in place or not verified: {", ".join(o.name for o in bad)}', file=sys.stderr)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
