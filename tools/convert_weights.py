"""Convert an official checkpoint (or any weights file drward reads) to ``.safetensors``, once.

    python tools/convert_weights.py weights/v2-1_512-ema-pruned.ckpt weights/v2-1_512-ema-pruned.safetensors
    python tools/convert_weights.py weights/osediff_face.pkl weights/osediff_face.safetensors

The input is read without running anything from it (drward/utils/safe_load.py); the output holds the tensors that
drward's converters read, so the option key that named the input can name the output. Prints what was dropped
(non-tensor entries such as Lightning's ``global_step`` and callbacks, tensors outside the state dict). Exits 1 with
a one-line message when the input cannot be read.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

from drward.utils.safe_load import UnsafeFileError  # noqa: E402
from drward.weights.common import ConversionError  # noqa: E402
from drward.weights.convert import convert_to_safetensors  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='checkpoint to convert (.ckpt, .pth, .pt, .pkl, .bin)')
    parser.add_argument('dst', help='output .safetensors file')
    parser.add_argument('--show', type=int, default=20, help='dropped entries to list (default 20)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.src):
        print(f'convert_weights: no file {args.src}', file=sys.stderr)
        return 1
    try:
        report = convert_to_safetensors(args.src, args.dst)
    except (UnsafeFileError, ConversionError, ValueError) as error:
        print(f'convert_weights: {error}', file=sys.stderr)
        return 1
    print(report.summary(limit=args.show))
    return 0


if __name__ == '__main__':
    sys.exit(main())
