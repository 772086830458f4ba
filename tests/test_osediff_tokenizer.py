"""OSEDiff's captions are tokenised as OSEDiff tokenises them (SD 2.1's CLIPTokenizer, pad token '!'); DiffBIR keeps
open_clip's tokenizer. Everything from local files: a tiny vocabulary built here, and SD 2.1's files rebuilt from
open_clip's bundled merges."""
import json

import pytest
import torch
from transformers import CLIPTokenizer

from drward.archs import sd_tokenizer
from drward.archs.sd_tokenizer import CLIPTokenizerIds, byte_symbols, write_sd21_tokenizer

CAPTIONS = ['a photo!', 'Hello, world!! wow', "it's a face.", '', 'A   smiling\twoman', 'x ' * 120,
            'naïve café', '&amp; x']


def _tiny_tokenizer_folder(path, pad='!'):
    """A tiny CLIP-style BPE vocabulary: the 256 byte symbols, the same with ``</w>``, four merges, two specials."""
    symbols = byte_symbols()
    merges = ['p h', 'o t', 'ph o</w>', 'f a']
    vocab = symbols + [s + '</w>' for s in symbols] + [m.replace(' ', '') for m in merges] + \
        ['<|startoftext|>', '<|endoftext|>']
    path.mkdir()
    (path / 'vocab.json').write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (path / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n')
    (path / 'special_tokens_map.json').write_text(json.dumps({**sd_tokenizer.SD21_SPECIAL_TOKENS, 'pad_token': pad}))
    return str(path)


@pytest.fixture(scope='module')
def sd21_folder(tmp_path_factory):
    return write_sd21_tokenizer(str(tmp_path_factory.mktemp('tok') / 'sd21'))


def test_ids_equal_transformers_clip_tokenizer_on_a_tiny_vocabulary(tmp_path):
    folder = _tiny_tokenizer_folder(tmp_path / 'tiny')
    ours = CLIPTokenizerIds(folder, context_length=16)(CAPTIONS)
    reference = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    for caption, row in zip(CAPTIONS, ours):
        expected = reference(caption, padding='max_length', max_length=16, truncation=True).input_ids
        assert row.tolist() == expected, caption
    assert ours.shape == (len(CAPTIONS), 16) and ours.dtype == torch.int64
    assert ours[5, -1] == reference.eos_token_id  # truncated: the end token kept in the last place


def test_the_rebuilt_sd21_vocabulary_is_open_clips(sd21_folder):
    from open_clip.tokenizer import SimpleTokenizer
    with open(f'{sd21_folder}/vocab.json', encoding='utf-8') as handle:
        vocab = json.load(handle)
    reference = SimpleTokenizer().encoder  # open_clip names its two special tokens <start_of_text> / <end_of_text>
    assert len(vocab) == len(reference) == 49408
    assert {t: i for t, i in vocab.items() if i < 49406} == {t: i for t, i in reference.items() if i < 49406}
    assert vocab['<|startoftext|>'] == 49406 and vocab['<|endoftext|>'] == 49407


def test_osediff_ids_differ_from_open_clip_where_osediffs_do(sd21_folder):
    from open_clip.tokenizer import SimpleTokenizer
    ours = CLIPTokenizerIds(sd21_folder)(CAPTIONS)
    reference = CLIPTokenizer.from_pretrained(sd21_folder, local_files_only=True)
    open_clip = SimpleTokenizer()(CAPTIONS)
    for i, caption in enumerate(CAPTIONS):
        assert ours[i].tolist() == reference(caption, padding='max_length', max_length=77,
                                             truncation=True).input_ids, caption
    assert ours[0, :5].tolist() == [49406, 320, 1125, 0, 49407]  # '!' is SD 2.1's pad token: id 0 (issue 30)
    assert open_clip[0, 3] == 256  # open_clip: '!</w>'
    same = [i for i, c in enumerate(CAPTIONS) if '!' not in c and '&' not in c]
    assert torch.equal(ours[same], open_clip[same])  # elsewhere the two agree (same vocabulary, same BPE)


def test_osediff_uses_sd21s_tokenizer_and_diffbir_keeps_open_clips(sd21_folder):
    from drward.archs.diffbir_arch import DiffBIRRestorer
    from drward.archs.osediff_arch import OSEDiffRestorer
    osediff = OSEDiffRestorer(tiny=True, tokenizer_dir=sd21_folder)
    diffbir = DiffBIRRestorer(tiny=True, num_steps=2)
    assert osediff.sd.text_encoder.tokenize(['a photo!'])[0, 3] == 0
    assert diffbir.sd.text_encoder.tokenize(['a photo!'])[0, 3] == 256
    with torch.no_grad():  # the ids reach the text tower: '!' and '.' give different contexts
        a, b = (osediff.sd.prompts_context([c, 'x'], 'cpu', torch.float32)[0] for c in ('a photo!', 'a photo.'))
    assert not torch.allclose(a, b)


def test_a_missing_folder_is_written_once_and_reused(tmp_path, monkeypatch):
    folder = tmp_path / 'weights' / 'sd21_tokenizer'
    CLIPTokenizerIds(str(folder))
    assert (folder / 'vocab.json').is_file() and (folder / 'special_tokens_map.json').is_file()
    monkeypatch.setattr(sd_tokenizer, 'write_sd21_tokenizer', lambda f: pytest.fail('written twice'))
    assert CLIPTokenizerIds(str(folder))(['a photo!'])[0, 3] == 0


def test_a_folder_without_vocabulary_files_is_named(tmp_path):
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'readme.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match='junk has no vocab.json / merges.txt'):
        CLIPTokenizerIds(str(tmp_path / 'junk'))
