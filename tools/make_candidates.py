"""Make the candidates people label: restorations and degraded copies of aligned faces, and their pairs file.

    python tools/make_candidates.py -i datasets/celeba_test/gt -o tasks/celeba \
        --restorer options/refl_diffbir.yml \
        --restorer options/refl_diffbir.yml:experiments/refl_diffbir/models/net_g_3500.safetensors \
        --restorer options/refl_osediff.yml --seeds 0,1 --degraded 2
    python tools/make_candidates.py --demo -o tasks/demo        # tiny random restorers on demo faces, CPU
    python tools/label_pairs.py --pairs tasks/demo/pairs.jsonl   # then label them

FACES holds aligned faces (GT; degraded on the fly with the paper's degradations under fixed seeds) or, with
--lq, the LQ inputs themselves. TASK gets face_<stem>/ folders (reference.png, caption.txt when the face has a
<stem>.txt caption, one PNG per candidate) and pairs.jsonl (every pair of candidates of a face). A rerun adds
only what is missing. The logic is in drward/annotate/candidates.py.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-i', '--input', help='folder of aligned faces (GT, or LQ with --lq)')
    parser.add_argument('-o', '--output', required=True, help='task folder to write')
    parser.add_argument('--restorer', action='append', default=[], metavar='OPT.yml[:CHECKPOINT]',
                        help="a restorer: an option file's network_g (+ a trained checkpoint); repeatable")
    parser.add_argument('--tiny', action='store_true', help='add the tiny random DiffBIR and OSEDiff (no weights)')
    parser.add_argument('--seeds', default='0', help='sampling seeds, one candidate each [0]')
    parser.add_argument('--degraded', type=int, default=2, metavar='K', help='degraded copies of the GT [2]')
    parser.add_argument('--lq', action='store_true', help='the inputs are LQ faces (no GT: no degraded copies)')
    parser.add_argument('--steps', type=int, help="DDIM steps of sampling restorers [the option file's; demo: 4]")
    parser.add_argument('--device', default='auto')
    parser.add_argument('--demo', action='store_true', help='4 bundled 64² demo faces, --tiny (4 steps)')
    parser.add_argument('--no-progress', action='store_true')
    from drward.utils.image_header import add_max_pixels_argument
    add_max_pixels_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import drward  # noqa: F401  (registers the restorers)
    from drward.annotate.candidates import face_restorer_candidate, make_candidates, restorer_name
    from drward.utils.image_header import apply_max_pixels
    from drward.utils.options import MissingWeightsError, OptionError
    apply_max_pixels(args)
    output = osp.abspath(args.output)
    restorers = []
    for item in args.restorer:
        opt, _, checkpoint = item.partition(':')
        opt, checkpoint = osp.abspath(opt), osp.abspath(checkpoint) if checkpoint else None
        restorers.append(face_restorer_candidate(restorer_name(opt, checkpoint), opt, checkpoint, device=args.device,
                                                 steps=args.steps))
    if args.tiny or args.demo:
        steps = args.steps or (4 if args.demo else None)
        restorers += [face_restorer_candidate(f'tiny_{name}', None, tiny=name, device=args.device, steps=steps)
                      for name in ('diffbir', 'osediff')]
    faces = args.input
    if args.demo:
        from drward.data.demo_faces import ensure_demo_faces
        faces = ensure_demo_faces(osp.join(output, 'demo_faces'), size=64, count=4)
    if not faces:
        print('give -i FACES (or --demo)', file=sys.stderr)
        return 1
    cwd = os.getcwd()
    os.chdir(ROOT)  # option files name weights relative to the repo root
    try:
        counts = make_candidates(osp.join(cwd, faces), output, restorers, [int(s) for s in args.seeds.split(',')],
                                 args.degraded, args.lq, progress=not args.no_progress)
    except (MissingWeightsError, OptionError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 1
    finally:
        os.chdir(cwd)
    print(f"{counts['faces']} faces: {counts['written']} candidates written, {counts['kept']} already there; "
          f"{counts['pairs']} pairs in {osp.join(output, 'pairs.jsonl')}")
    for reason in counts['skipped']:
        print(f'skipped: {reason}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
