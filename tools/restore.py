"""Restore the faces of your own photos with DiffBIR or OSEDiff (+ DiffusionReward), GFPGAN / CodeFormer style.

    python tools/restore.py -i photos/ -o results/restored --opt options/refl_diffbir.yml \
        --checkpoint experiments/refl_diffbir/models/net_g_3500.safetensors
    python tools/restore.py -i inputs/demo -o results/restore_demo --tiny --demo-inputs   # fresh clone, CPU

INPUT is an image or a folder of images (jpg, png, webp, ...; any size; grey and RGBA converted). Whole photos:
every face is detected, aligned to the FFHQ 512 template, restored and pasted back; ``--aligned`` for inputs that
are aligned faces already. OUTPUT gets cropped_faces/, restored_faces/, cmp/ (input face | restored) and
restored_imgs/ (the whole image at the input's size), and summary.txt. The logic is in drward/inference/.
"""
import argparse
import os
import os.path as osp
import sys
import time

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)


def parse_args() -> argparse.Namespace:
    from drward.inference.model import add_restorer_arguments  # imports drward (BasicSR): after sys.path
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-i', '--input', required=True, help='an image or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder')
    add_restorer_arguments(parser.add_argument_group('restorer'),
                           steps_help="DDIM steps (DiffBIR; default: the option file's num_steps)")
    faces = parser.add_argument_group('faces')
    faces.add_argument('--aligned', action='store_true', help='the inputs are aligned faces (no detection)')
    faces.add_argument('--face-size', type=int, default=512, help='side of the aligned faces (FFHQ template)')
    faces.add_argument('--detector', choices=('auto', 'facexlib', 'dlib'), default='auto',
                       help='auto: facexlib RetinaFace when weights/facexlib/detection_Resnet50_Final.pth exists')
    faces.add_argument('--min-score', type=float, help='lowest detector score kept (default: 0.5 for dlib)')
    parser.add_argument('--demo-inputs', action='store_true',
                        help='first write a demo photo and an aligned face into INPUT (a folder)')
    parser.add_argument('--no-progress', action='store_true', help='no tqdm bar')
    from drward.utils.image_header import add_max_pixels_argument
    add_max_pixels_argument(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    for key in ('input', 'output', 'opt', 'checkpoint'):  # the caller's paths, before moving to the repo root
        if getattr(args, key):
            setattr(args, key, osp.abspath(getattr(args, key)))
    os.chdir(ROOT)  # option files name weights relative to the repo root
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    start = time.time()
    import drward  # noqa: F401  (registers the restorers)
    from drward.face.detect import build_face_detector
    from drward.inference.demo_inputs import write_demo_inputs
    from drward.inference.model import build_face_restorer
    from drward.inference.photos import PhotoRestorer, input_images, photo_face_detector, write_summary
    from drward.utils.image_header import apply_max_pixels
    from drward.utils.options import MissingWeightsError, OptionError
    apply_max_pixels(args)
    try:
        if args.demo_inputs:
            write_demo_inputs(args.input)
        paths = input_images(args.input)
        model = build_face_restorer(args.opt, args.tiny, args.restorer, args.checkpoint, args.steps, args.seed,
                                    args.weight_dtype, args.device)
        detector = None if args.aligned else photo_face_detector(
            build_face_detector(args.detector, 'weights/facexlib', str(model.device)), args.min_score)
    except (MissingWeightsError, OptionError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 1
    description = model.description + ('' if args.aligned else f'\n  faces: detector {detector.name}, aligned to '
                                        f'the FFHQ template at {args.face_size}x{args.face_size}')
    print(f'Restoring {len(paths)} image(s) from {args.input}', flush=True)
    if args.batch_size < 1:
        print(f'--batch-size must be >= 1, got {args.batch_size}', file=sys.stderr)
        return 1
    photos = PhotoRestorer(model.restore_face, args.output, args.aligned, args.face_size, detector,
                           batch_size=args.batch_size, restore_faces=model.restore_faces)
    summary = photos.run(paths, progress=not args.no_progress)
    summary.total_seconds = time.time() - start
    write_summary(summary, description, args.output)
    return 0 if summary.count('skipped') < len(paths) else 1


if __name__ == '__main__':
    sys.exit(main())
