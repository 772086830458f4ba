"""OSEDiff's caption tokenizer: SD 2.1-base's ``CLIPTokenizer`` (transformers), read from a local folder.

OSEDiff loads ``AutoTokenizer.from_pretrained(<sd 2.1 base>, subfolder='tokenizer')`` and calls it with
``padding='max_length', max_length=77, truncation=True``. That folder holds CLIP's byte-level BPE (49,408 ids) with
``pad_token: '!'``, which makes ``!`` a special token: ``"a photo!"`` gives ``[49406, 320, 1125, 0, 49407, 0, …]``
there, where open_clip's ``SimpleTokenizer`` (DiffBIR's reference, kept for DiffBIR) gives ``256`` (``!</w>``); its
text clean-up also differs (open_clip unescapes HTML entities, ``&amp;`` → ``&``). :class:`CLIPTokenizerIds` gives
the OSEDiff restorer exactly OSEDiff's ids, with no model hub:

* ``tokenizer_dir`` names a folder with ``vocab.json`` + ``merges.txt`` (+ ``special_tokens_map.json`` /
  ``tokenizer_config.json``), e.g. a copy of ``stable-diffusion-2-1-base/tokenizer``;
* where that folder does not exist, :func:`write_sd21_tokenizer` writes it: the same 49,408-entry vocabulary rebuilt
  from the BPE merges that open_clip ships (256 byte symbols, the same 256 with ``</w>``, one id per merge, then
  ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407), with SD 2.1's special tokens (``pad_token: '!'``).

    python -m drward.archs.sd_tokenizer weights/sd21_tokenizer     # write the folder (offline)
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import os.path as osp
import tempfile
from typing import List, Sequence

import torch

CONTEXT_LENGTH = 77
SD21_SPECIAL_TOKENS = {'bos_token': '<|startoftext|>', 'eos_token': '<|endoftext|>', 'unk_token': '<|endoftext|>',
                       'pad_token': '!'}
VOCAB_FILES = ('vocab.json', 'merges.txt')
DEFAULT_DIR = osp.join(osp.expanduser(os.environ.get('XDG_CACHE_HOME', '~/.cache')), 'drward', 'sd21_tokenizer')


def byte_symbols() -> List[str]:
    """CLIP's byte-level alphabet: one printable unicode character per byte value, in CLIP's order (printable
    Latin-1 bytes map to themselves, the others to 256 + n)."""
    keep = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + \
        list(range(ord('®'), ord('ÿ') + 1))
    chars, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in keep] + [chars[b] for b in range(256) if b not in keep]


def open_clip_merges() -> List[str]:
    """The BPE merges CLIP's 49,408-id vocabulary is built from (open_clip's bundled file, header line dropped)."""
    from open_clip.tokenizer import default_bpe
    with gzip.open(default_bpe(), 'rt', encoding='utf-8') as handle:
        lines = handle.read().split('\n')
    return lines[1:49152 - 256 - 2 + 1]


def write_sd21_tokenizer(folder: str) -> str:
    """Write SD 2.1-base's tokenizer files into ``folder`` (atomically: a temporary sibling folder renamed)."""
    merges = open_clip_merges()
    symbols = byte_symbols()
    vocab = symbols + [s + '</w>' for s in symbols] + [''.join(m.split()) for m in merges] + \
        [SD21_SPECIAL_TOKENS['bos_token'], SD21_SPECIAL_TOKENS['eos_token']]
    parent = osp.dirname(osp.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.tokenizer.', dir=parent)
    with open(osp.join(staging, 'vocab.json'), 'w', encoding='utf-8') as handle:
        json.dump({token: i for i, token in enumerate(vocab)}, handle, ensure_ascii=False)
    with open(osp.join(staging, 'merges.txt'), 'w', encoding='utf-8') as handle:
        handle.write('#version: 0.2\n' + '\n'.join(merges) + '\n')
    with open(osp.join(staging, 'special_tokens_map.json'), 'w', encoding='utf-8') as handle:
        json.dump(SD21_SPECIAL_TOKENS, handle)
    with open(osp.join(staging, 'tokenizer_config.json'), 'w', encoding='utf-8') as handle:
        json.dump({'model_max_length': CONTEXT_LENGTH, 'do_lower_case': True, 'tokenizer_class': 'CLIPTokenizer',
                   **SD21_SPECIAL_TOKENS}, handle)
    try:
        os.rename(staging, folder)
    except OSError:  # another process wrote it first: keep theirs
        if not all(osp.isfile(osp.join(folder, f)) for f in VOCAB_FILES):
            raise
        for name in os.listdir(staging):
            os.remove(osp.join(staging, name))
        os.rmdir(staging)
    return folder


class CLIPTokenizerIds:
    """Captions → ids ``(B, context_length)`` as OSEDiff computes them: transformers' ``CLIPTokenizer`` of
    ``folder`` (local files only), padded to ``context_length`` with the folder's pad token, truncated with the end
    token kept. ``folder=None`` uses (and on first use writes) SD 2.1's files in :data:`DEFAULT_DIR`."""

    def __init__(self, folder: str = None, context_length: int = CONTEXT_LENGTH):
        from transformers import CLIPTokenizer
        folder = folder or DEFAULT_DIR
        if not all(osp.isfile(osp.join(folder, f)) for f in VOCAB_FILES):
            if osp.isdir(folder) and os.listdir(folder):
                raise FileNotFoundError(f'tokenizer folder {folder} has no {" / ".join(VOCAB_FILES)}')
            if osp.isdir(folder):
                os.rmdir(folder)
            write_sd21_tokenizer(folder)
        self.folder, self.context_length = folder, int(context_length)
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)

    def __call__(self, prompts: Sequence[str], context_length: int = None) -> torch.Tensor:
        return self.tokenizer(list(prompts), padding='max_length', max_length=context_length or self.context_length,
                              truncation=True, return_tensors='pt').input_ids


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="write SD 2.1-base's tokenizer files (what OSEDiff loads), offline")
    parser.add_argument('folder', nargs='?', default=DEFAULT_DIR)
    folder = parser.parse_args(argv).folder
    if all(osp.isfile(osp.join(folder, f)) for f in VOCAB_FILES):
        print(f'{folder} already holds a tokenizer: left as it is')
    else:
        print(f'wrote {write_sd21_tokenizer(folder)}')


if __name__ == '__main__':
    main()
