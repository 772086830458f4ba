"""Every option key drward reads in the real option files: a wrong type, an out-of-range value and a misspelt key
each give one error line naming the file, the key and what is accepted, from the schema alone (no model built)."""
import copy
import glob
import os
import re

import pytest
import yaml
from option_files import ROOT

from drward.models.option_specs import check_option_file, schema_for
from drward.utils.option_schema import MISSING, Section, walk
from drward.utils.options import OptionError

REAL = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'options', '*.yml'))
              if 'tiny' not in os.path.basename(p))
#: Metric entries are checked by each metric function (its own accepted keys), not by the schema.
UNCHECKED = ('val.metrics.', 'compare.network_g.')


def _load(path):
    with open(os.path.join(ROOT, path)) as f:
        return yaml.safe_load(f)


def _set(opt, dotted, value=None, rename=None):
    *parents, last = dotted.split('.')
    node = opt
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if rename is None:
        node[int(last) if isinstance(node, list) else last] = value
    else:
        node[rename] = node.pop(last)


def _misspelt(key, accepted):
    """``key`` with one letter dropped (or doubled, when dropping gives an accepted key)."""
    for candidate in (key[:-1], key[:1] + key[2:], key + key[-1]):
        if candidate not in accepted:
            return candidate
    raise AssertionError(key)


def _rejects(opt, path, key, words):
    with pytest.raises(OptionError) as error:
        check_option_file(opt, path)
    line = str(error.value)
    assert '\n' not in line and line.startswith(f'{path}: {key}') and words in line, line


@pytest.mark.parametrize('path', REAL)
def test_every_key_of_a_real_option_file_rejects_a_wrong_type_a_bad_value_and_a_misspelling(path):
    opt = _load(path)
    check_option_file(opt, path)  # the file as shipped passes
    schema = schema_for(opt)
    assert schema is not None, f'{path}: no schema for model_type {opt.get("model_type")}'
    tried, entries = 0, list(walk(opt, schema, ''))
    specs = {key: spec for key, _, spec in entries}
    for key, value, spec in entries[1:]:
        if key.startswith(UNCHECKED):
            continue
        for bad in (spec.wrong_type(), spec.out_of_range()):
            if bad is MISSING:
                continue
            broken = copy.deepcopy(opt)
            _set(broken, key, bad)
            _rejects(broken, path, key, f'accepted: {spec.accepted}')
            tried += 1
        parent, _, name = key.rpartition('.')
        section = specs[parent]
        if isinstance(section, Section) and not section.open_keys:
            broken, typo = copy.deepcopy(opt), _misspelt(name, section.accepted_keys)
            _set(broken, key, rename=typo)
            _rejects(broken, path, f'{parent}.{typo}' if parent else typo, 'unknown key')
            tried += 1
    assert tried > 50, tried


def test_a_misspelt_key_names_the_closest_accepted_one(tmp_path):
    opt = _load('options/refl_diffbir.yml')
    _set(opt, 'train.frm_update.every', rename='evry')
    with pytest.raises(OptionError, match=r"options/x.yml: train.frm_update.evry: unknown key \(did you mean "
                                          r"'every'\?\); accepted keys: \["):
        check_option_file(opt, 'options/x.yml')


def test_tools_train_stops_on_a_bad_value_with_one_line_before_building_anything(tmp_path):
    from option_files import run_tools_train, write_options
    opt = _load('options/refl_diffbir_tiny.yml')
    opt['train']['frm_update']['every'] = 0
    result = run_tools_train(write_options(opt, tmp_path / 'bad.yml'))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('option error: ') and 'bad.yml: train.frm_update.every: got 0 (int); accepted: ' in last
    assert 'Traceback' not in result.stderr


def _commented_out_keys(lines):
    """Each commented-out option (``# key: value`` with a one-token value, or ``# key:`` with its commented block
    below it) as (line index, number of lines); prose comments (``# key: several words``) are not options."""
    found = []
    for i, line in enumerate(lines):
        match = re.match(r'^(\s*)# (\w+):(.*)$', line)
        if not match:
            continue
        indent, value = len(match.group(1)), match.group(3).split(' #')[0].strip()
        if ' ' in value:
            continue
        end = i + 1
        if not value:  # a block: the commented lines indented below it
            while end < len(lines) and re.match(r'^\s{%d}#\s{3,}\S' % indent, lines[end]):
                end += 1
            if end == i + 1:
                continue
        found.append((i, end - i))
    return found


def _uncomment(lines, start, count):
    out = list(lines)
    for j in range(start, start + count):
        indent = len(out[j]) - len(out[j].lstrip())
        out[j] = out[j][:indent] + out[j][indent + 2:]
        out[j] = re.sub(r'<[^>]*>', 'placeholder', out[j])
    return out


ALL_FILES = sorted(os.path.relpath(p, ROOT) for pattern in ('options/*.yml', 'options/*/*.yml')
                   for p in glob.glob(os.path.join(ROOT, pattern)))


@pytest.mark.parametrize('path', ALL_FILES)
def test_every_commented_out_key_of_an_option_file_is_accepted_once_uncommented(path):
    with open(os.path.join(ROOT, path)) as f:
        lines = f.read().splitlines()
    for start, count in _commented_out_keys(lines):
        text = '\n'.join(_uncomment(lines, start, count))
        opt = yaml.safe_load(text)
        check_option_file(opt, f'{path} (line {start + 1} uncommented)')


def test_the_commented_restored_root_of_the_test_files_is_found_and_accepted():
    with open(os.path.join(ROOT, 'options', 'test_celeba.yml')) as f:
        lines = f.read().splitlines()
    keys = [lines[i].split('#', 1)[1].split(':')[0].strip() for i, _ in _commented_out_keys(lines)]
    assert 'restored_root' in keys
