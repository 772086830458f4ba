"""The weight-file manifest: which published files exist, where to fetch them, how to check them.

The package's own manifest is ``drward/weights/manifest.yml``; ``tools/download_weights.py --manifest FILE`` takes
another in the same YAML format::

    files:
      - {name: FILE_NAME, sha256: HEX, size: BYTES, sources: [URL, ...]}   # size optional

plus the optional keys ``git_sha1`` (the git blob id of a file kept in a git repository) and ``note``. A file is
verified by ``sha256`` when given, else by ``git_sha1``, else by ``size``; with none of them it is "not verified".
"""
from __future__ import annotations

import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Mapping, Optional, Tuple

import yaml

from drward.utils.options import OptionError, check_keys, weight_paths

DEFAULT_MANIFEST = osp.join(osp.dirname(__file__), 'manifest.yml')
ENTRY_KEYS = ('name', 'sha256', 'size', 'sources', 'git_sha1', 'note')


@dataclass
class WeightFile:
    """One published weight file: its name, its hashes or size, and its sources in the order they are tried."""
    name: str
    sources: List[str]
    sha256: Optional[str] = None
    size: Optional[int] = None
    git_sha1: Optional[str] = None
    note: str = ''
    extra: dict = field(default_factory=dict)

    @property
    def verified_by(self) -> str:
        """What a download of this file is checked against: ``sha256``, ``git blob sha1``, ``size only`` or
        ``not verified`` (no hash and no size published)."""
        if self.sha256:
            return 'sha256'
        if self.git_sha1:
            return 'git blob sha1'
        if self.size is not None:
            return 'size only'
        return 'not verified'


def _hex(value: Any, length: int, what: str) -> Optional[str]:
    if value is None:
        return None
    text = str(value).lower()
    if not re.fullmatch(f'[0-9a-f]{{{length}}}', text):
        raise OptionError(f'manifest: {what} must be {length} hex digits (a prefix is not a hash), got {value!r}')
    return text


def parse_manifest(data: Mapping[str, Any], origin: str = 'manifest') -> List[WeightFile]:
    """Validate a parsed manifest and return its files."""
    if not isinstance(data, Mapping) or not isinstance(data.get('files'), list):
        raise OptionError(f'{origin}: expected a mapping with a "files:" list')
    files, seen = [], set()
    for i, entry in enumerate(data['files']):
        owner = f'{origin}: files[{i}]'
        if not isinstance(entry, Mapping):
            raise OptionError(f'{owner}: expected a mapping, got {entry!r}')
        check_keys(owner, entry, ENTRY_KEYS, required=('name', 'sources'))
        name, sources = str(entry['name']), entry['sources']
        if osp.basename(name) != name or name in ('', '.', '..'):
            raise OptionError(f'{owner}: name must be a bare file name, got {name!r}')
        if name in seen:
            raise OptionError(f'{owner}: {name} is listed twice')
        seen.add(name)
        if isinstance(sources, str) or not sources or not all(isinstance(s, str) for s in sources):
            raise OptionError(f'{owner} ({name}): sources must be a non-empty list of URLs')
        size = entry.get('size')
        if size is not None and (not isinstance(size, int) or size < 0):
            raise OptionError(f'{owner} ({name}): size must be a byte count, got {size!r}')
        files.append(WeightFile(name=name, sources=list(sources),
                                sha256=_hex(entry.get('sha256'), 64, f'{name} sha256'), size=size,
                                git_sha1=_hex(entry.get('git_sha1'), 40, f'{name} git_sha1'),
                                note=str(entry.get('note') or '')))
    return files


def load_manifest(path: Optional[str] = None) -> List[WeightFile]:
    """The files of the manifest at ``path`` (default: the package's ``manifest.yml``)."""
    path = path or DEFAULT_MANIFEST
    if not osp.isfile(path):
        raise FileNotFoundError(f'manifest {path} not found')
    with open(path) as f:
        return parse_manifest(yaml.safe_load(f), path)


def real_option_files(options_dir: str) -> List[str]:
    """The option files that use real (published) weights: every ``*.yml`` whose name does not say ``tiny``."""
    return sorted(osp.join(options_dir, name) for name in os.listdir(options_dir)
                  if name.endswith('.yml') and 'tiny' not in name)


def files_for_options(option_files: Iterable[str], manifest: List[WeightFile], root: str
                      ) -> Tuple[List[Tuple[WeightFile, str]], List[Tuple[str, str, str]]]:
    """The manifest files the option files name, with the destination each names (relative paths are taken from
    ``root``, as tools/train.py does), and the weight paths that are not published files (``(option file, key,
    path)``: checkpoints a training run makes)."""
    by_name = {wf.name: wf for wf in manifest}
    wanted, unknown, seen = [], [], set()
    for option_file in option_files:
        with open(option_file) as f:
            opt = yaml.safe_load(f)
        for key, path in weight_paths(opt):
            dest = osp.normpath(path if osp.isabs(path) else osp.join(root, path))
            wf = by_name.get(osp.basename(path))
            if wf is None:
                unknown.append((option_file, key, path))
            elif dest not in seen:
                seen.add(dest)
                wanted.append((wf, dest))
    return wanted, unknown
