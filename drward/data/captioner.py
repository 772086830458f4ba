"""A caption per face from a local image-to-text model, through ``transformers`` (``tools/caption.py``).

The paper scores faces against a caption made by a vision-language model; nobody ships those captions for FFHQ.
:class:`FaceCaptioner` loads any local checkpoint folder that ``AutoModelForImageTextToText`` and ``AutoProcessor``
read (BLIP, BLIP-2, GIT, LLaVA, LLaVA-NeXT, Qwen-VL, ...), with ``local_files_only`` (nothing is downloaded):

* a model whose processor has a chat template (LLaVA-family instruction models) gets the prompt as a user turn after
  the image, :data:`DEFAULT_INSTRUCTION` by default, and its answer is the caption;
* a captioning model without one (BLIP, GIT) continues the prompt as a text prefix, :data:`DEFAULT_PREFIX` by
  default, and the caption is the prefix plus its continuation (BLIP's conditional captioning); an empty prompt
  captions unconditionally.

Decoding is greedy (deterministic); the prompt's tokens are cut off when the model's output repeats them. Captions
are put on one line. :func:`caption_images` runs a captioner over an :class:`~drward.data.image_source.ImageSource`
into a caption store, batched, with a tqdm bar, skipping faces the store already holds and unreadable images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from basicsr.utils import get_root_logger
from tqdm import tqdm

from drward.data.caption_store import one_line
from drward.data.image_io import ImageReadError
from drward.data.image_source import ImageSource

#: The instruction for chat (LLaVA-family) models: the FRM's text side wants what a face looks like.
DEFAULT_INSTRUCTION = ('Describe the face in this photo in one sentence: gender, approximate age, expression, '
                       'hair, skin, and anything worn on the face or head.')
#: The text prefix for captioning models that continue a prompt (BLIP, GIT).
DEFAULT_PREFIX = 'a photo of'
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


class CaptionModelError(RuntimeError):
    """The caption model folder is missing or is not an image-to-text model; the message names the folder."""


class FaceCaptioner:
    """A local image-to-text model that captions batches of faces (see the module docstring)."""

    def __init__(self, model_dir: str, prompt: Optional[str] = None, device: str = 'cpu', dtype: str = 'fp32',
                 max_new_tokens: int = 60) -> None:
        check_model_folder(model_dir)
        from transformers import AutoModelForImageTextToText, AutoProcessor
        try:
            self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True,
                                                                     dtype=DTYPES[dtype])
        except (OSError, ValueError, KeyError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CaptionModelError(f'cannot load an image-to-text model from {model_dir}: {reason}') from error
        self.model.to(device).eval()
        self.device, self.dtype, self.max_new_tokens = torch.device(device), DTYPES[dtype], int(max_new_tokens)
        self.chat = bool(getattr(self.processor, 'chat_template', None))
        self.prompt = prompt if prompt is not None else (DEFAULT_INSTRUCTION if self.chat else DEFAULT_PREFIX)
        self.text = self._model_text()
        self.name = f'{type(self.model).__name__} from {model_dir}'

    def _model_text(self) -> str:
        if not self.chat:
            return self.prompt
        tokenizer = getattr(self.processor, 'tokenizer', None)
        if tokenizer is not None:
            tokenizer.padding_side = 'left'  # decoder-only models generate after the prompt; pad before it
        turn = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': self.prompt}]}]
        return self.processor.apply_chat_template(turn, add_generation_prompt=True)

    @torch.no_grad()
    def caption(self, images: Sequence[np.ndarray]) -> List[str]:
        """Captions of ``(H, W, 3)`` uint8 RGB images, one line each."""
        kwargs = dict(images=list(images), return_tensors='pt')
        if self.text:
            kwargs.update(text=[self.text] * len(images), padding=True)
        inputs = self.processor(**kwargs).to(self.device)
        if 'pixel_values' in inputs:
            inputs['pixel_values'] = inputs['pixel_values'].to(self.dtype)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        prompt_ids = inputs.get('input_ids')
        if prompt_ids is not None and output.shape[1] >= prompt_ids.shape[1] and \
                torch.equal(output[:, :prompt_ids.shape[1]], prompt_ids):
            output = output[:, prompt_ids.shape[1]:]
        return [one_line(text) for text in self.processor.batch_decode(output, skip_special_tokens=True)]


def check_model_folder(model_dir: str) -> None:
    """:class:`CaptionModelError` unless ``model_dir`` is a folder with a ``config.json``."""
    if not os.path.isdir(model_dir):
        raise CaptionModelError(f'caption model folder {model_dir} does not exist (--model): give a local checkpoint '
                                'folder of an image-to-text model (config.json, weights and processor files, e.g. a '
                                'BLIP or LLaVA download)')
    if not os.path.isfile(os.path.join(model_dir, 'config.json')):
        raise CaptionModelError(f'caption model folder {model_dir} has no config.json: not a transformers checkpoint '
                                'folder (save_pretrained / a Hugging Face download)')


@dataclass
class CaptionReport:
    """What :func:`caption_images` did."""

    images: int
    already: int = 0
    captioned: int = 0
    blank: int = 0
    skipped: List[str] = field(default_factory=list)


def rgb_uint8(bgr: np.ndarray) -> np.ndarray:
    """A float BGR image in [0, 1] as ``(H, W, 3)`` uint8 RGB."""
    return np.ascontiguousarray(np.clip(np.round(bgr[..., ::-1] * 255.0), 0, 255).astype(np.uint8))


def caption_images(source: ImageSource, store, key: Callable[[str], str], caption: Callable[[Sequence[np.ndarray]],
                   List[str]], batch_size: int = 8, names: Optional[Sequence[str]] = None) -> CaptionReport:
    """Caption every image of ``source`` that ``store`` lacks (by ``key(name)``), ``batch_size`` at a time.

    ``caption`` maps a list of uint8 RGB images to their captions (:meth:`FaceCaptioner.caption`); each batch is
    stored before the next starts, so an interrupted run keeps what it made. Unreadable images are logged, listed
    in the report and left uncaptioned (a rerun tries them again).
    """
    names = list(source.names() if names is None else names)
    todo = [name for name in names if not store.has(key(name))]
    report = CaptionReport(images=len(names), already=len(names) - len(todo))
    with tqdm(total=len(todo), unit='face', desc='caption') as bar:
        for start in range(0, len(todo), batch_size):
            batch, images = [], []
            for name in todo[start:start + batch_size]:
                try:
                    images.append(rgb_uint8(source.read(name)))
                    batch.append(name)
                except ImageReadError as error:
                    report.skipped.append(f'{name} ({error})')
                    get_root_logger().warning(f'caption: skipping {error}')
            texts = caption(images) if images else []
            store.add([(key(name), text) for name, text in zip(batch, texts)])
            report.captioned += len(texts)
            report.blank += sum(1 for text in texts if not text)
            bar.update(len(todo[start:start + batch_size]))
    return report
