"""Tiny random image-to-text models saved with ``save_pretrained``, for tests of tools/caption.py (no download).

``tiny_blip``: a BLIP captioner (continues a text prefix, no chat template); ``tiny_llava``: a LLaVA chat model
(CLIP vision tower, Llama text model, a one-line chat template). Both have a word-level vocabulary of a few dozen
words and are built in well under a second; their captions are random words, as their weights are.
"""
import os

import torch

WORDS = ['a', 'photo', 'of', 'face', 'smiling', 'woman', 'man', 'with', 'short', 'long', 'dark', 'light', 'hair',
         'eyes', 'glasses', 'young', 'old', ',', '.']
LLAVA_TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                  "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
                  "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def tiny_blip(folder) -> str:
    """A tiny random ``BlipForConditionalGeneration`` + ``BlipProcessor`` in ``folder``; returns it as a string."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor
    os.makedirs(folder, exist_ok=True)
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '[DEC]'] + WORDS
    with open(os.path.join(folder, 'vocab.txt'), 'w') as handle:
        handle.write('\n'.join(vocab) + '\n')
    tokenizer = BertTokenizer(os.path.join(folder, 'vocab.txt'), bos_token='[DEC]')
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=128, bos_token_id=5, pad_token_id=0, sep_token_id=3,
                eos_token_id=3)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16)) \
        .save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={'height': 32, 'width': 32}), tokenizer).save_pretrained(folder)
    return str(folder)


def tiny_llava(folder) -> str:
    """A tiny random ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` with a chat template in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    vocab = ['<pad>', '<unk>', '<s>', '</s>', '<image>', 'USER:', 'ASSISTANT:', 'describe', 'this'] + WORDS
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token='<unk>'))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token='<unk>', pad_token='<pad>', bos_token='<s>',
                                        eos_token='</s>', extra_special_tokens={'image_token': '<image>'})
    images = CLIPImageProcessor(size={'shortest_edge': 32}, crop_size={'height': 32, 'width': 32})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8, chat_template=LLAVA_TEMPLATE,
                               vision_feature_select_strategy='default', num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=dict(model_type='clip_vision_model', hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type='llama', vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        image_token_index=4, vision_feature_layer=-1, vision_feature_select_strategy='default')
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)
