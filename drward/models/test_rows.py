"""The rows of :class:`~drward.models.face_test_model.FaceTestModel`'s table: which restorers, from the option file.

Row 1 is ``network_g`` with ``path.pretrain_network_g``; in compare mode row 2 is the ``compare`` block
(:data:`COMPARE_OPTIONS`). A row's :meth:`RestorerSpec.fingerprint` (arch options, checkpoint, its size and mtime)
is what a rerun compares before it reuses the images restored earlier.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from basicsr.utils.registry import ARCH_REGISTRY

from drward.utils.option_schema import REQUIRED, Bool, ByRegistry, Option, Text, resolve
from drward.utils.options import OptionError

NETWORK_G = ByRegistry(ARCH_REGISTRY)
#: ``compare``: a second restorer in the same table.
COMPARE_OPTIONS = {
    'label': Option(Text(), REQUIRED, "the second row's label"),
    'network_g': Option(NETWORK_G, None, "its arch options (default: the first row's)"),
    'pretrain_network_g': Option(Text(nullable=True), None, 'its checkpoint'),
    'param_key_g': Option(Text(), 'params', "the checkpoint's key"),
    'strict_load_g': Option(Bool(), True, 'refuse missing or unexpected weights'),
}


@dataclass
class RestorerSpec:
    """One row of the table: a label, the arch options and an optional checkpoint."""

    label: str
    network_opt: Dict[str, Any]
    pretrain: Optional[str] = None
    param_key: str = 'params'
    strict: bool = True

    @property
    def slug(self) -> str:
        return re.sub(r'[^A-Za-z0-9._+-]+', '_', self.label)

    def fingerprint(self, extra: Mapping[str, Any]) -> Dict[str, Any]:
        stat = os.stat(self.pretrain) if self.pretrain and osp.exists(self.pretrain) else None
        return {'network_g': self.network_opt, 'pretrain': self.pretrain, 'param_key': self.param_key,
                'pretrain_size_mtime': [stat.st_size, int(stat.st_mtime)] if stat else None, **extra}


def restorer_rows(opt: Mapping[str, Any]) -> List[RestorerSpec]:
    """The table's rows from the option file: ``network_g`` (labelled ``val.label``, default its type) and, in
    compare mode, the ``compare`` block's restorer (default arch: the first row's); two rows need two labels."""
    path_opt, val_opt = opt.get('path') or {}, opt.get('val') or {}
    base = RestorerSpec(val_opt.get('label') or opt['network_g']['type'], deepcopy(opt['network_g']),
                        path_opt.get('pretrain_network_g'), path_opt.get('param_key_g', 'params'),
                        path_opt.get('strict_load_g', True))
    rows = [base]
    if opt.get('compare'):
        compare = resolve('FaceTestModel compare', COMPARE_OPTIONS, opt['compare'], ignore=())
        rows.append(RestorerSpec(compare['label'], deepcopy(compare['network_g'] or base.network_opt),
                                 compare['pretrain_network_g'], compare['param_key_g'], compare['strict_load_g']))
        if rows[0].slug == rows[1].slug:
            raise OptionError(f'FaceTestModel: the two rows need different labels (both {rows[0].label!r})')
    return rows
