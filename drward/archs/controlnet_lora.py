"""LoRA (peft) on DiffBIR's IRControlNet: the option ``network_g.lora``, the adapters, their file layout and the merge.

The paper trains the whole IRControlNet (docs/design.md §1, "What is trained"); ``network_g.lora`` trains low-rank
adapters instead, each adapted layer computing

    ``W x + (α / r)·B A x``,   ``A ∈ R^{r×in}`` (Gaussian at creation), ``B ∈ R^{out×r}`` (zero at creation),

so a fresh adapter leaves the IRControlNet as loaded (θ = θ₀ at the first step). Only the factors ``A``, ``B`` are
trained and saved; the IRControlNet's own weights stay frozen (and, with ``weight_dtype: bf16``, stored in bf16).
The same peft calls as OSEDiff's adapters (:mod:`drward.archs.lora`): ``add_adapter(LoraConfig(...))`` on the
diffusers model, ``init_lora_weights='gaussian'``.

Option ``lora: {rank, alpha, target_modules, dropout}``: ``rank`` (r, required), ``alpha`` (α, default r: scale 1),
``target_modules`` (substrings of the weight names to adapt, default :data:`DEFAULT_TARGETS`: attention and
feed-forward projections, ResNet convolutions, ``conv_in`` and the 13 zero convolutions), ``dropout`` (peft's
``lora_dropout`` on the adapter input, 0.0).

A LoRA checkpoint (``net_g_<iter>.safetensors``) holds the factors under their peft names and, in its metadata
(:data:`METADATA_KEY`), the rank, α, dropout, the adapted module names and the base the adapters were trained on
(``base``: the ``diffbir_checkpoint`` file name, or how the IRControlNet was initialised). A DiffBIR restorer built
without ``lora`` recognises that layout and adds the same adapters before loading (:func:`read_lora_metadata`).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from basicsr.archs import build_network
from torch import nn

from drward.archs.lora import adaptable_module_names, is_lora_name
from drward.archs.restorer import file_metadata, load_restorer_weights
from drward.utils.atomic_io import atomic_save, unshared
from drward.utils.options import OptionError

ADAPTER = 'default'
METADATA_KEY = 'drward_controlnet_lora'
LORA_KEYS = ('rank', 'alpha', 'target_modules', 'dropout')
#: What is adapted by default: every attention / feed-forward projection of the transformer blocks, the ResNet
#: blocks' two 3×3 convolutions, the 8-channel input convolution and the 13 zero convolutions (the outputs c_k).
DEFAULT_TARGETS = ('to_q', 'to_k', 'to_v', 'to_out.0', 'proj_in', 'proj_out', 'ff.net.0.proj', 'ff.net.2',
                   'conv1', 'conv2', 'conv_in', 'controlnet_down_blocks', 'controlnet_mid_block')


@dataclass
class ControlNetLora:
    """One LoRA set-up: rank r, scale numerator α, the target patterns, dropout; ``modules`` (the concrete module
    names, resolved on a model) and ``base`` (what the adapted weights are) are filled when adapters are added."""

    rank: int
    alpha: float
    target_modules: List[str]
    dropout: float = 0.0
    modules: Optional[List[str]] = None
    base: str = ''

    def to_metadata(self) -> Dict[str, str]:
        return {METADATA_KEY: json.dumps(asdict(self), sort_keys=True)}


def parse_lora_option(value, owner: str = 'DiffBIRRestorer') -> Optional[ControlNetLora]:
    """``network_g.lora`` → :class:`ControlNetLora` (None when absent); one-line :class:`OptionError` otherwise."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise OptionError(f'{owner}: lora must be a mapping {{rank, alpha, target_modules, dropout}}, got {value!r}')
    unknown = sorted(set(value) - set(LORA_KEYS))
    if unknown:
        raise OptionError(f'{owner}: lora.{unknown[0]}: unknown key; accepted: {", ".join(LORA_KEYS)}')
    rank = value.get('rank')
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise OptionError(f'{owner}: lora.rank is required, an integer >= 1 (got {rank!r})')
    alpha = value.get('alpha', rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise OptionError(f'{owner}: lora.alpha must be a number > 0 (default: the rank), got {alpha!r}')
    targets = value.get('target_modules', list(DEFAULT_TARGETS))
    if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets or \
            not all(isinstance(t, str) and t for t in targets):
        raise OptionError(f'{owner}: lora.target_modules must be a non-empty list of module name parts, '
                          f'got {targets!r}')
    dropout = value.get('dropout', 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise OptionError(f'{owner}: lora.dropout must be in [0, 1), got {dropout!r}')
    return ControlNetLora(int(rank), float(alpha), list(targets), float(dropout))


def add_controlnet_lora(controlnet: nn.Module, lora: ControlNetLora) -> ControlNetLora:
    """Inject fresh adapters (``A`` Gaussian, ``B = 0``) into ``controlnet`` (in place), freeze every other weight;
    returns ``lora`` with ``modules`` resolved (the file's list, when it came from one)."""
    from peft import LoraConfig
    modules = lora.modules or adaptable_module_names(controlnet, lora.target_modules)
    if not modules:
        raise OptionError(f'lora.target_modules {lora.target_modules} match no weight of the IRControlNet')
    controlnet.requires_grad_(False)
    controlnet.add_adapter(LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                      init_lora_weights='gaussian', target_modules=list(modules)),
                           adapter_name=ADAPTER)
    for name, parameter in controlnet.named_parameters():
        parameter.requires_grad_(is_lora_name(name))
    lora.modules = list(modules)
    return lora


def lora_state_dict(controlnet: nn.Module) -> Dict[str, torch.Tensor]:
    """The adapter factors only, under their peft names (``….lora_A.default.weight``)."""
    return {name: tensor for name, tensor in controlnet.state_dict().items() if is_lora_name(name)}


def base_name(diffbir_checkpoint: Optional[str], tiny: bool, seed: int) -> str:
    """What the adapters are trained on, for the file's metadata."""
    if diffbir_checkpoint:
        return os.path.basename(str(diffbir_checkpoint))
    return f'tiny random (seed {seed}), IRControlNet from the UNet' if tiny else 'IRControlNet from the SD UNet'


def read_lora_metadata(metadata: Optional[Mapping[str, str]]) -> Optional[ControlNetLora]:
    """The :class:`ControlNetLora` a checkpoint's metadata names, or None for a full-IRControlNet file."""
    if not metadata or METADATA_KEY not in metadata:
        return None
    fields = json.loads(metadata[METADATA_KEY])
    return ControlNetLora(**{k: fields[k] for k in ('rank', 'alpha', 'target_modules', 'dropout', 'modules', 'base')})


def merged_state_dict(controlnet: nn.Module) -> Dict[str, torch.Tensor]:
    """The IRControlNet's full state dict with every adapter merged, ``W' = W + (α/r)·B A`` (peft's own merge, on a
    copy), under the plain names a model without LoRA has: a full checkpoint (as a full fine-tune writes)."""
    import copy

    from peft.tuners.lora import LoraLayer
    merged = copy.deepcopy(controlnet).float()
    for module in merged.modules():
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
    return {name.replace('.base_layer.', '.'): tensor for name, tensor in merged.state_dict().items()
            if not is_lora_name(name)}


def trainable_count(controlnet: nn.Module) -> int:
    """Number of trained (adapter) parameters."""
    return sum(p.numel() for name, p in controlnet.named_parameters() if is_lora_name(name))


def write_merged_checkpoint(src: str, dst: str, network_opt: Mapping) -> int:
    """Build ``network_opt``'s DiffBIR restorer (the LoRA's base), load the LoRA-only checkpoint ``src`` and write
    the merged IRControlNet to ``dst`` (``.safetensors``): a full checkpoint, as a full fine-tune writes one, which
    a restorer without ``lora`` loads. Returns the number of tensors written."""
    if read_lora_metadata(file_metadata(src)) is None:
        raise ValueError(f'{src}: not a LoRA checkpoint (no {METADATA_KEY} metadata)')
    if not str(dst).endswith('.safetensors'):
        raise ValueError(f'{dst}: the output must be a .safetensors file')
    opt = {k: v for k, v in network_opt.items() if k != 'lora'}
    net = build_network(opt)
    load_restorer_weights(net, src)
    state = unshared({k: v.detach().cpu().contiguous() for k, v in merged_state_dict(net.controlnet).items()})
    atomic_save(state, dst, metadata={'drward_restorer': net.family,
                                      'drward_merged_from': os.path.basename(str(src))})
    return len(state)
