"""Convert an official checkpoint (or any weights file drward reads) to ``.safetensors``, once.

    python tools/convert_weights.py weights/v2-1_512-ema-pruned.ckpt weights/v2-1_512-ema-pruned.safetensors
    python tools/convert_weights.py weights/osediff_face.pkl weights/osediff_face.safetensors
    python tools/convert_weights.py experiments/refl_diffbir_lora/models/net_g_3500.safetensors merged.safetensors \
        --merge-lora --opt options/ablations/refl_diffbir_lora.yml

``--merge-lora``: the input is a LoRA-only DiffBIR checkpoint (``network_g.lora``); the output is the full IRControlNet
with the adapters merged into its weights (``W + (alpha/r)·B A``), built on the base that ``--opt``'s ``network_g``
loads; a restorer without ``lora`` loads it like a full fine-tune's checkpoint.

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
    parser.add_argument('--merge-lora', action='store_true', help='merge a LoRA-only DiffBIR checkpoint into a full '
                        'IRControlNet checkpoint (needs --opt)')
    parser.add_argument('--opt', help="option file whose network_g builds the LoRA's base (with --merge-lora)")
    args = parser.parse_args(argv)
    if not osp.isfile(args.src):
        print(f'convert_weights: no file {args.src}', file=sys.stderr)
        return 1
    if args.merge_lora:
        return merge_lora(args)
    try:
        report = convert_to_safetensors(args.src, args.dst)
    except (UnsafeFileError, ConversionError, ValueError) as error:
        print(f'convert_weights: {error}', file=sys.stderr)
        return 1
    print(report.summary(limit=args.show))
    return 0


def merge_lora(args) -> int:
    """``--merge-lora``: the LoRA checkpoint merged into its base IRControlNet, written as a full checkpoint."""
    from drward.archs.controlnet_lora import write_merged_checkpoint
    from drward.inference.model import read_network_options
    from drward.utils.options import OptionError
    if not args.opt:
        print('convert_weights: --merge-lora needs --opt (the option file whose network_g is the base)',
              file=sys.stderr)
        return 1
    try:
        count = write_merged_checkpoint(args.src, args.dst, read_network_options(args.opt))
    except (OptionError, ValueError, KeyError) as error:
        print(f'convert_weights: {str(error).splitlines()[0]}', file=sys.stderr)
        return 1
    print(f'{args.src} -> {args.dst}: {count} tensors written (IRControlNet with the LoRA merged)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
