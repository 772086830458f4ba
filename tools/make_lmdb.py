"""Pack a folder of face images (and their ``<stem>.txt`` captions) into a BasicSR lmdb that drward reads.

    python tools/make_lmdb.py --images datasets/ffhq/images512x512 --out datasets/ffhq/ffhq_512.lmdb
    # sub-folders too (keys face_0001/gfpgan, ...), 4 processes decoding the images first:
    python tools/make_lmdb.py --images datasets/frm_faces --out datasets/frm_faces.lmdb --recursive --workers 4

Writes BasicSR's layout (``make_lmdb_from_imgs``: data.mdb, lock.mdb, meta_info.txt; key = image path without
extension) plus ``captions.tsv`` (key<TAB>caption, from the ``.txt`` files) inside the lmdb folder. Unreadable
images are skipped and listed. A rerun keeps a complete lmdb (and adds captions it lacks) and refuses an
incomplete one; ``--overwrite`` rebuilds (the old lmdb is replaced once the new one is complete). Details:
drward/data/lmdb_pack.py.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.data.image_io import ImageListError  # noqa: E402
from drward.data.lmdb_pack import LmdbPackError, PackReport, pack_folder  # noqa: E402
from drward.utils.image_header import add_max_pixels_argument, apply_max_pixels  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', required=True, help='folder of face images (with <stem>.txt captions, optional)')
    parser.add_argument('--out', required=True, help='lmdb folder to write, ending in .lmdb')
    parser.add_argument('--recursive', action='store_true', help='pack the images of sub-folders too')
    parser.add_argument('--overwrite', action='store_true', help='rebuild an existing lmdb')
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression level in the lmdb [1]')
    parser.add_argument('--workers', type=int, default=1, help='processes that decode the images first [1]')
    add_max_pixels_argument(parser)
    return parser.parse_args(argv)


def summary(report: PackReport) -> str:
    lines = [f'{report.action} {report.lmdb_path}: {report.images} images; captions.tsv holds '
             f'{report.captions_total} captions ({report.captions_added} added now)']
    if report.action == 'kept':
        lines[0] += ' (a complete lmdb is kept; --overwrite rebuilds it)'
    if report.not_packed:
        lines.append(f'  {report.not_packed} images of the folder are not in it (unreadable ones, or new since it was '
                     'built; --overwrite rebuilds it)')
    if report.skipped:
        lines.append(f'  skipped {len(report.skipped)} images:')
        lines += [f'    {entry}' for entry in report.skipped]
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_max_pixels(args)
    try:
        report = pack_folder(args.images, args.out, recursive=args.recursive, overwrite=args.overwrite,
                             compress_level=args.compress_level, workers=args.workers)
    except (LmdbPackError, ImageListError) as error:
        print(f'make_lmdb: {error}', file=sys.stderr)
        return 1
    print(summary(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
