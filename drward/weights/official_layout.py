"""Official checkpoint layouts written from drward's modules: the inverse of the converters in this package.

A diffusers model's weights → the names an LDM / DiffBIR / OSEDiff release file uses, written from the LDM module
structure (``input_blocks`` / ``middle_block`` / ``output_blocks`` of the UNet and ControlNet, ``encoder.down`` /
``decoder.up`` of the VAE, open_clip's text tower, OSEDiff's LoRA module lists). Converting such a file back must
consume every key and reproduce the model exactly (``tests/test_weights_converters.py``).
:mod:`drward.weights.synthetic` writes its weight files through these, so they ship with the package; the tiny
test checkpoints built on them live with the tests (``tests/tiny_weights.py``).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch

from drward.archs.sd_parts import OpenCLIPTextEncoder

StateDict = Dict[str, torch.Tensor]

_RESNET = {'norm1': 'in_layers.0', 'conv1': 'in_layers.2', 'time_emb_proj': 'emb_layers.1', 'norm2': 'out_layers.0',
           'conv2': 'out_layers.3', 'conv_shortcut': 'skip_connection'}
_UNET_TOP = {'time_embedding.linear_1': 'time_embed.0', 'time_embedding.linear_2': 'time_embed.2',
             'conv_in': 'input_blocks.0.0', 'conv_norm_out': 'out.0', 'conv_out': 'out.2'}


def _resnet_name(rest: str) -> str:
    layer, _, kind = rest.partition('.')
    return f'{_RESNET[layer]}.{kind}'


def _encoder_key(parts: list, layers: int) -> Optional[str]:
    """LDM name of a diffusers ``down_blocks`` / ``mid_block`` key (split on '.'), shared by UNet and ControlNet."""
    if parts[0] == 'down_blocks':
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), '.'.join(parts[4:])
        if kind == 'downsamplers':
            return f'input_blocks.{1 + block * (layers + 1) + layers}.0.op.{rest.split(".", 1)[1]}'
        slot = 0 if kind == 'resnets' else 1
        rest = _resnet_name(rest) if kind == 'resnets' else rest
        return f'input_blocks.{1 + block * (layers + 1) + index}.{slot}.{rest}'
    if parts[0] == 'mid_block':
        kind, index, rest = parts[1], int(parts[2]), '.'.join(parts[3:])
        if kind == 'resnets':
            return f'middle_block.{2 * index}.{_resnet_name(rest)}'
        return f'middle_block.1.{rest}'
    return None


def diffusers_unet_to_ldm(state: Mapping[str, torch.Tensor], layers_per_block: int,
                          clone: bool = True) -> StateDict:
    """diffusers ``UNet2DConditionModel`` state → LDM ``UNetModel`` names (without the ``model.diffusion_model.``
    prefix). Up block ``b`` has ``layers_per_block + 1`` layers; its upsampler sits in the block's last slot.
    ``clone=False`` keeps the model's own tensors (no second copy, for real-size writers)."""
    out, up_layers = {}, layers_per_block + 1
    has_attention = {k.split('.')[1] for k in state if k.startswith('up_blocks.') and '.attentions.' in k}
    for key, tensor in state.items():
        parts = key.split('.')
        prefix = '.'.join(parts[:-1])
        name = _encoder_key(parts, layers_per_block)
        if name is None and prefix in _UNET_TOP:
            name = f'{_UNET_TOP[prefix]}.{parts[-1]}'
        elif name is None and parts[0] == 'up_blocks':
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), '.'.join(parts[4:])
            first = block * up_layers
            if kind == 'upsamplers':
                slot = 2 if parts[1] in has_attention else 1
                name = f'output_blocks.{first + up_layers - 1}.{slot}.{rest}'
            elif kind == 'resnets':
                name = f'output_blocks.{first + index}.0.{_resnet_name(rest)}'
            else:
                name = f'output_blocks.{first + index}.1.{rest}'
        if name is None:
            raise KeyError(f'no LDM name for UNet key {key}')
        out[name] = tensor.clone() if clone else tensor
    return out


def ircontrolnet_to_diffbir(state: Mapping[str, torch.Tensor], layers_per_block: int,
                            clone: bool = True) -> StateDict:
    """IRControlNet state → the bare DiffBIR ``ControlNet`` layout of ``v1_face.pth`` / ``v2.pth``."""
    out = {}
    for key, tensor in state.items():
        parts = key.split('.')
        prefix = '.'.join(parts[:-1])
        name = _encoder_key(parts, layers_per_block)
        if name is None and prefix in ('time_embedding.linear_1', 'time_embedding.linear_2', 'conv_in'):
            name = f'{_UNET_TOP[prefix]}.{parts[-1]}'
        elif name is None and parts[0] == 'controlnet_down_blocks':
            name = f'zero_convs.{parts[1]}.0.{parts[2]}'
        elif name is None and parts[0] == 'controlnet_mid_block':
            name = f'middle_block_out.0.{parts[1]}'
        if name is None:
            raise KeyError(f'no DiffBIR name for ControlNet key {key}')
        out[name] = tensor.clone() if clone else tensor
    return out


_VAE_ATTENTION = {'group_norm': 'norm', 'to_q': 'q', 'to_k': 'k', 'to_v': 'v', 'to_out.0': 'proj_out'}


def _vae_leaf(rest: str) -> str:
    return rest.replace('conv_shortcut', 'nin_shortcut')


def diffusers_vae_to_ldm(state: Mapping[str, torch.Tensor], clone: bool = True) -> StateDict:
    """diffusers ``AutoencoderKL`` state → LDM ``AutoencoderKL`` names (decoder levels are numbered bottom-up in
    LDM; attention projections are 1×1 convolutions there)."""
    levels = 1 + max(int(k.split('.')[2]) for k in state if k.startswith('decoder.up_blocks.'))
    out = {}
    for key, tensor in state.items():
        parts = key.split('.')
        side, rest = parts[0], '.'.join(parts[1:])
        if side in ('quant_conv', 'post_quant_conv'):
            out[key] = tensor.clone() if clone else tensor
            continue
        if parts[1] in ('conv_in', 'conv_out'):
            name = key
        elif parts[1] == 'conv_norm_out':
            name = f'{side}.norm_out.{parts[2]}'
        elif parts[1] in ('down_blocks', 'up_blocks'):
            level = int(parts[2]) if parts[1] == 'down_blocks' else levels - 1 - int(parts[2])
            group = 'down' if parts[1] == 'down_blocks' else 'up'
            inner = '.'.join(parts[4:])
            if parts[3] == 'resnets':
                name = f'{side}.{group}.{level}.block.{_vae_leaf(inner)}'
            else:  # downsamplers.0.conv / upsamplers.0.conv
                name = f'{side}.{group}.{level}.{"downsample" if group == "down" else "upsample"}.' + \
                       '.'.join(parts[5:])
        elif parts[1] == 'mid_block' and parts[2] == 'resnets':
            name = f'{side}.mid.block_{int(parts[3]) + 1}.{_vae_leaf(".".join(parts[4:]))}'
        elif parts[1] == 'mid_block':
            inner = '.'.join(parts[4:])
            for new, old in _VAE_ATTENTION.items():
                if inner.startswith(new + '.'):
                    inner = old + inner[len(new):]
            name = f'{side}.mid.attn_1.{inner}'
            if tensor.ndim == 2:
                tensor = tensor[:, :, None, None]
        else:
            raise KeyError(f'no LDM name for VAE key {rest}')
        out[name] = tensor.clone() if clone else tensor
    return out


def open_clip_text_to_ldm(encoder: OpenCLIPTextEncoder, seed: int = 0, clone: bool = True) -> StateDict:
    """The text part of an SD 2.x LDM file: the encoder's weights plus what a full open_clip tower also stores and
    the penultimate-layer encoder does not run (one more block, ``text_projection``, ``logit_scale``) — random."""
    out = {k: v.clone() if clone else v for k, v in encoder.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    last = len(encoder.transformer.resblocks)
    for key, value in encoder.transformer.resblocks[0].state_dict().items():
        out[f'transformer.resblocks.{last}.{key}'] = torch.randn(value.shape, generator=generator) * 0.02
    width = encoder.positional_embedding.shape[1]
    out['text_projection'] = torch.randn(width, width, generator=generator) * width ** -0.5
    out['logit_scale'] = torch.tensor(4.6052)
    return out


_OSEDIFF_UNET_GREP = ('to_k', 'to_q', 'to_v', 'to_out.0', 'conv', 'conv1', 'conv2', 'conv_in', 'conv_shortcut',
                      'conv_out', 'proj_out', 'proj_in', 'ff.net.2', 'ff.net.0.proj')
_OSEDIFF_VAE_GREP = ('conv1', 'conv2', 'conv_in', 'conv_shortcut', 'conv', 'conv_out', 'to_k', 'to_q', 'to_v',
                     'to_out.0')


def osediff_official_unet_lists(unet: torch.nn.Module) -> Dict[str, list]:
    """OSEDiff's ``initialize_unet`` rule, applied as its script does (parameter by parameter, first matching
    pattern wins): the module lists stored under ``unet_lora_{encoder,decoder,others}_modules``."""
    lists = {'encoder': [], 'decoder': [], 'others': []}
    kept = [n for n, _ in unet.named_parameters() if 'bias' not in n and 'norm' not in n]
    for name in (n for n in kept if any(p in n for p in _OSEDIFF_UNET_GREP)):
        part = ('encoder' if 'down_blocks' in name or 'conv_in' in name else
                'decoder' if 'up_blocks' in name or 'conv_out' in name else 'others')
        lists[part].append(name.replace('.weight', ''))
    return lists


def osediff_official_vae_list(vae: torch.nn.Module) -> list:
    """OSEDiff's ``initialize_vae`` rule as its script applies it: one entry per (parameter, pattern) hit, so names
    repeat (``conv1`` also matches ``conv``; ``quant_conv`` is added once per pattern)."""
    modules = []
    for name, _ in vae.named_parameters():
        if 'bias' in name or 'norm' in name:
            continue
        for pattern in _OSEDIFF_VAE_GREP:
            if pattern in name and 'encoder' in name:
                modules.append(name.replace('.weight', ''))
            elif 'quant_conv' in name and 'post_quant_conv' not in name:
                modules.append(name.replace('.weight', ''))
    return modules


@torch.no_grad()
def osediff_pkl_dict(unet: torch.nn.Module, vae: torch.nn.Module, rank: int = 4, seed: int = 0,
                     std: float = 0.05) -> Dict:
    """Give ``unet`` / ``vae`` OSEDiff's adapters in place (peft ``LoraConfig(r=rank, init_lora_weights='gaussian')``,
    all active), add N(0, std²) to every LoRA factor and to ``conv_in``, and return the official ``osediff.pkl``
    dict (its tensors are the models' own, not copies). Meta-device models give the same keys, unfilled."""
    from peft import LoraConfig
    unet_lists, vae_list = osediff_official_unet_lists(unet), osediff_official_vae_list(vae)
    for part, modules in unet_lists.items():
        unet.add_adapter(LoraConfig(r=rank, init_lora_weights='gaussian', target_modules=modules),
                         adapter_name=f'default_{part}')
    unet.set_adapter(['default_encoder', 'default_decoder', 'default_others'])
    vae.add_adapter(LoraConfig(r=rank, init_lora_weights='gaussian', target_modules=vae_list),
                    adapter_name='default_encoder')
    generator = torch.Generator().manual_seed(seed)
    for model in (unet, vae):
        for name, parameter in model.named_parameters():
            if ('lora' in name or (model is unet and 'conv_in' in name)) and not parameter.is_meta:
                parameter.add_(torch.randn(parameter.shape, generator=generator).to(parameter) * std)
    checkpoint = {f'unet_lora_{part}_modules': modules for part, modules in unet_lists.items()}
    checkpoint.update(vae_lora_encoder_modules=vae_list, rank_unet=rank, rank_vae=rank)
    checkpoint['state_dict_unet'] = {k: v for k, v in unet.state_dict().items() if 'lora' in k or 'conv_in' in k}
    checkpoint['state_dict_vae'] = {k: v for k, v in vae.state_dict().items() if 'lora' in k}
    return checkpoint
