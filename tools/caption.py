"""Caption every face of a folder or lmdb with a local image-to-text model (transformers), resumably.

    # <stem>.txt beside each image of a folder (the layout the datasets and tools/make_lmdb.py read)
    python tools/caption.py --images datasets/ffhq/images512x512 --model weights/llava-1.5-7b-hf
    # an lmdb made by tools/make_lmdb.py: appends to <lmdb>/captions.tsv
    python tools/caption.py --images datasets/ffhq/ffhq_512.lmdb --model weights/blip-image-captioning-large
    # one caption file for a folder instead of .txt files (key = file name without extension)
    python tools/caption.py --images faces/ --model MODEL --out faces_captions.tsv

``--model`` is any local checkpoint folder of an image-to-text model (BLIP, GIT, LLaVA, ...; nothing is downloaded).
Chat models get ``--prompt`` as an instruction (default: describe the face's gender, age, expression, hair, skin
and what is worn); captioning models continue it as a prefix (default "a photo of"). Faces already captioned are
skipped, so an interrupted run continues where it stopped; unreadable images are skipped and listed. Details:
drward/data/captioner.py, drward/data/caption_store.py.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.data.caption_store import BesideTextStore, CaptionFileStore  # noqa: E402
from drward.data.captioner import (  # noqa: E402
    DTYPES,
    CaptionModelError,
    CaptionReport,
    FaceCaptioner,
    caption_images,
    check_model_folder,
)
from drward.data.image_io import CaptionFileError, ImageListError  # noqa: E402
from drward.data.image_source import LMDB_CAPTION_FILE, ImageSource, is_lmdb_folder  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', required=True, help='folder of face images, or an lmdb (tools/make_lmdb.py)')
    parser.add_argument('--model', required=True, help='local checkpoint folder of an image-to-text model')
    parser.add_argument('--out', help='one TSV caption file to append to (default: <stem>.txt beside each image; '
                                      f'for an lmdb, <lmdb>/{LMDB_CAPTION_FILE})')
    parser.add_argument('--prompt', default=None, help='instruction (chat models) or text prefix (captioning models)')
    parser.add_argument('--batch-size', type=int, default=8, help='faces per generate call [8]')
    parser.add_argument('--max-new-tokens', type=int, default=60, help='caption length limit in tokens [60]')
    parser.add_argument('--device', default=None, help='torch device [cuda if available, else cpu]')
    parser.add_argument('--dtype', default='fp32', choices=sorted(DTYPES), help='model weights dtype [fp32]')
    return parser.parse_args(argv)


def caption_target(images: str, out):
    """``(source, store, key)``: where the faces come from, where captions go and the store's key of a face."""
    lmdb = is_lmdb_folder(images)
    source = ImageSource('caption', {'type': 'lmdb'} if lmdb else None, images)
    if out is None and not lmdb:
        return source, BesideTextStore(), lambda name: name
    store = CaptionFileStore(out or osp.join(images, LMDB_CAPTION_FILE))
    return source, store, (lambda name: name) if lmdb else (lambda name: osp.splitext(osp.basename(name))[0])


def summary(report: CaptionReport, store, captioner_name: str) -> str:
    lines = [f'captions: {report.captioned} written now, {report.already} already there, {len(report.skipped)} '
             f'unreadable, of {report.images} faces -> {store.description}']
    if report.captioned:
        lines.append(f'  model: {captioner_name}' + (f'; {report.blank} blank captions' if report.blank else ''))
    lines += [f'  skipped {entry}' for entry in report.skipped]
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    try:
        check_model_folder(args.model)
        source, store, key = caption_target(args.images, args.out)
        names = source.names()
        captioner = None

        def caption(images):
            nonlocal captioner
            if captioner is None:  # loaded only when some face still needs a caption
                import torch
                device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
                captioner = FaceCaptioner(args.model, args.prompt, device, args.dtype, args.max_new_tokens)
            return captioner.caption(images)

        report = caption_images(source, store, key, caption, args.batch_size, names)
    except (CaptionModelError, ImageListError, CaptionFileError) as error:
        print(f'caption: {error}', file=sys.stderr)
        return 1
    print(summary(report, store, captioner.name if captioner else args.model))
    return 0


if __name__ == '__main__':
    sys.exit(main())
