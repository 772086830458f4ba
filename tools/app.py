"""A restoration web page (Gradio): upload photos, press Restore, compare before / after, download the results.

    python tools/app.py --opt options/refl_diffbir.yml \
        --checkpoint experiments/refl_diffbir/models/net_g_3500.safetensors     # http://127.0.0.1:7860
    python tools/app.py --tiny                                                  # tiny random models, CPU

The restorer is built once at start-up; requests queue for one worker. The page binds 127.0.0.1 unless --host says
otherwise (--auth USER:PASSWORD to ask for a login). Same pipeline as tools/restore.py (drward/inference/).
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    from drward.inference.model import add_restorer_arguments  # imports drward (BasicSR): after sys.path
    from drward.utils.page_launch import add_launch_arguments
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    model = parser.add_argument_group('restorer (built once)')
    add_restorer_arguments(model, steps_help="default DDIM steps on the page (default: the option file's)")
    model.add_argument('--face-size', type=int, help='side of the aligned faces (default 512; 128 with --tiny)')
    model.add_argument('--detector', choices=('auto', 'facexlib', 'dlib'), default='auto')
    page = parser.add_argument_group('page')
    add_launch_arguments(page)  # --host, --port, --auth: the same on both pages (drward/utils/page_launch.py)
    page.add_argument('--max-files', type=int, default=8, help='images per request')
    page.add_argument('--max-file-mb', type=float, default=20.0,
                      help='largest upload, MB (the server refuses a larger one with HTTP 413) [20]')
    page.add_argument('--max-side', type=int, default=4096, help='longer photos are shrunk to this many pixels')
    page.add_argument('--max-queue', type=int, default=32,
                      help='requests that may wait for the one worker; more are told the queue is full [32]')
    from drward.utils.image_header import add_max_pixels_argument
    add_max_pixels_argument(page)
    return parser.parse_args(argv)


def build(args):
    """The page's Gradio Blocks for these arguments (the restorer built, nothing launched)."""
    for key in ('opt', 'checkpoint'):
        if getattr(args, key):
            setattr(args, key, osp.abspath(getattr(args, key)))
    os.chdir(ROOT)  # option files name weights relative to the repo root
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import drward  # noqa: F401  (registers the restorers)
    from drward.face.detect import build_face_detector
    from drward.inference.model import build_face_restorer
    from drward.inference.page import PageLimits, RestorationPage, build_page
    from drward.inference.photos import photo_face_detector
    from drward.utils.image_header import apply_max_pixels
    apply_max_pixels(args)  # every upload's header is checked against it before decoding
    model = build_face_restorer(args.opt, args.tiny, args.restorer, args.checkpoint, args.steps, args.seed,
                                args.weight_dtype, args.device)
    detector = photo_face_detector(build_face_detector(args.detector, 'weights/facexlib', str(model.device)))
    face_size = args.face_size or (128 if args.tiny and not args.opt else 512)
    limits = PageLimits(args.max_files, args.max_file_mb, args.max_side)
    sampler = getattr(model.net, 'sampler', None)
    return build_page(RestorationPage(model, detector, face_size, limits, batch_size=max(1, args.batch_size)),
                      default_steps=sampler.num_steps if sampler is not None else None, max_queue=args.max_queue)


def main(argv=None) -> int:
    args = parse_args(argv)
    from drward.utils.options import MissingWeightsError, OptionError
    from drward.utils.page_launch import launch, launch_arguments
    try:
        host, port, auth = launch_arguments(args)
        demo = build(args)
    except (MissingWeightsError, OptionError, FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    # the server's own upload limit (HTTP 413 on /gradio_api/upload, whatever the client); bytes, since Gradio's
    # '<n>mb' strings take whole numbers only and --max-file-mb 2.5 must work
    launch(demo, host, port, auth, max_file_size=int(args.max_file_mb * 2 ** 20))
    return 0


if __name__ == '__main__':
    sys.exit(main())
