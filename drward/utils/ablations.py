"""The paper's ablations as option files derived from the full recipe by the smallest change each.

Each :class:`Ablation` names the keys it changes (a path into the option dict, the new value as YAML text, and
why). :func:`derive` applies them to the parent file's *text*, so every comment of the parent survives and the
derived file differs from it in exactly those keys plus ``name``. ``tools/derive_ablations.py`` writes
``options/ablations/*.yml``; ``tests/test_ablation_options.py`` checks the written files still match their parents.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

Change = Tuple[Tuple[str, ...], str, str]  # (key path, new YAML value, comment)


@dataclass(frozen=True)
class Ablation:
    """``<parent>_<suffix>.yml``: ``parent`` with ``changes`` applied; ``what`` is the header comment's first line."""

    suffix: str
    what: str
    changes: Tuple[Change, ...]


ABLATIONS: Tuple[Ablation, ...] = (
    Ablation('no_reward', 'without the reward term: L = λ_reg·L_reg + λ_dwt·L_DWT + λ_lpips·L_LPIPS',
             ((('train', 'reward_opt', 'loss_weight'), '0',
               'ABLATION: reward weight 0 (the FRM stays built: the hack monitor and validation read it)'),)),
    Ablation('no_lpips_dwt', 'without the fidelity terms L_LPIPS and L_DWT',
             ((('train', 'dwt_opt'), '~', 'ABLATION: no L_DWT'),
              (('train', 'lpips_opt'), '~', 'ABLATION: no L_LPIPS'))),
    Ablation('no_reg', 'without the regulariser L_reg (the 13 control residuals vs the frozen initial IRControlNet)',
             ((('train', 'reg_opt'), '~', 'ABLATION: no L_reg'),)),
    Ablation('no_dynamic_frm', 'without the dynamic FRM update: the FRM stays as loaded (also phase 1 of the '
             'reward-hacking recipe, docs/experiments.md)',
             ((('train', 'frm_update', 'every'), 'never', 'ABLATION: the FRM is never updated'),)),
    Ablation('grad_steps_2', 'truncation depth N = 2: the graph spans the last two denoiser calls (paper: N = 1)',
             ((('train', 'grad_steps'), '2', 'ABLATION: N = 2 (the N sweep)'),)),
    Ablation('grad_steps_4', 'truncation depth N = 4: the graph spans the last four denoiser calls (paper: N = 1)',
             ((('train', 'grad_steps'), '4', 'ABLATION: N = 4 (the N sweep)'),)),
    Ablation('lora', 'LoRA (rank 32) on the IRControlNet instead of the full fine-tune: fewer trained weights, '
             'smaller checkpoints and optimiser states (docs/experiments.md, docs/speed.md)',
             ((('network_g', 'lora'), '{rank: 32, alpha: 32, dropout: 0.0}',
               'ABLATION: LoRA adapters only (drward/archs/controlnet_lora.py)'),)),
)
#: parent option file → the suffix its derived files add to it (``refl_diffbir_tiny`` → ``refl_diffbir_<x>_tiny``)
PARENTS: Dict[str, str] = {'refl_diffbir': '', 'refl_diffbir_tiny': '_tiny'}


def derived_name(parent: str, ablation: Ablation) -> str:
    """``refl_diffbir`` + ``no_reg`` → ``refl_diffbir_no_reg``; the tiny parent's → ``refl_diffbir_no_reg_tiny``."""
    stem = parent[:-len('_tiny')] if parent.endswith('_tiny') else parent
    return f'{stem}_{ablation.suffix}{PARENTS.get(parent, "")}'


def _find_key(lines: List[str], path: Sequence[str]) -> int:
    """The line index of ``path`` (nested block keys, two-space YAML indentation); KeyError if absent."""
    start, end, indent = 0, len(lines), 0
    for depth, key in enumerate(path):
        pattern = re.compile(rf'^{" " * indent}{re.escape(key)}:(\s|$)')
        hit = next((i for i in range(start, end) if pattern.match(lines[i])), None)
        if hit is None:
            raise KeyError(f'option path {".".join(path)}: {key!r} not found at indentation {indent}')
        if depth == len(path) - 1:
            return hit
        start = hit + 1
        block_end = next((i for i in range(start, end) if lines[i].strip() and not lines[i].lstrip().startswith('#')
                          and len(lines[i]) - len(lines[i].lstrip()) <= indent), end)
        end, indent = block_end, indent + 2
    raise KeyError(path)


def _insert_key(lines: List[str], path: Sequence[str], value: str, comment: str) -> None:
    """Add ``path`` (absent in the parent) as the last key of its block, after the block's last non-blank line."""
    i = _find_key(lines, path[:-1])
    indent = len(lines[i]) - len(lines[i].lstrip()) + 2
    end = i + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) >= indent):
        end += 1
    while end > i + 1 and not lines[end - 1].strip():
        end -= 1
    lines.insert(end, f'{" " * indent}{path[-1]}: {value}   # {comment}')


def _replace_value(lines: List[str], path: Sequence[str], value: str, comment: str) -> None:
    """Set ``path`` to ``value``; a block value (the key's children on the lines below) is removed with it; a key
    the parent lacks is added at the end of its block."""
    try:
        i = _find_key(lines, path)
    except KeyError:
        if len(path) < 2:
            raise
        _insert_key(lines, path, value, comment)
        return
    indent = len(lines[i]) - len(lines[i].lstrip())
    end = i + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    while end > i + 1 and not lines[end - 1].strip():
        end -= 1
    lines[i:end] = [f'{" " * indent}{path[-1]}: {value}   # {comment}']


def derive(parent_text: str, parent: str, ablation: Ablation) -> str:
    """The text of ``derived_name(parent, ablation).yml``: a header naming what was removed, then the parent's text
    with ``name`` and the ablation's keys changed (each changed line commented)."""
    lines = parent_text.splitlines()
    name = derived_name(parent, ablation)
    _replace_value(lines, ('name',), name, f'ablation of {parent}')
    for path, value, comment in ablation.changes:
        _replace_value(lines, path, value, comment)
    keys = ', '.join('.'.join(path) for path, _, _ in ablation.changes)
    header = textwrap.wrap(f'ABLATION of options/{parent}.yml — {ablation.what}. Changed keys (all else as the '
                           f'parent; the lines marked ABLATION): name, {keys}.', 114,
                           initial_indent='# ', subsequent_indent='# ')
    header += [
              '# Written by tools/derive_ablations.py (rerun it after editing the parent); the rest of this header is',
              "# the parent's.",
              f'#   python tools/train.py -opt options/ablations/{name}.yml']
    return '\n'.join(header + lines) + '\n'


def changed_paths(ablation: Ablation) -> List[Tuple[str, ...]]:
    """The option paths the derived file differs from its parent in (``name`` included)."""
    return [('name',)] + [path for path, _, _ in ablation.changes]
