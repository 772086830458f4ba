"""README.md and docs/*.md point only at things that exist: every relative link (and its #anchor), and every
``tools/``, ``options/`` and ``benchmarks/`` path they name."""
import glob
import os.path as osp
import re

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = [osp.join(ROOT, 'README.md')] + sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
# a repo path: not part of a longer path or URL, ends in a word character (not in a trailing dot or slash)
REPO_PATH = re.compile(r'(?<![\w./<-])((?:tools|options|benchmarks)/[\w./-]*(?:\{[\w,.-]+\}[\w./-]*)*\w)'
                       r'(?![\w$])')  # not a path with a $shell_variable
BRACES = re.compile(r'\{([\w,.-]+)\}')


def expand_braces(path: str) -> list:
    # 'a_{x,y}.yml' names a_x.yml and a_y.yml, as a shell would read it: each is checked
    match = BRACES.search(path)
    if not match:
        return [path]
    head, tail = path[:match.start()], path[match.end():]
    return [p for alt in match.group(1).split(',') for p in expand_braces(head + alt + tail)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces to ``-``."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def anchors(path: str) -> set:
    text = re.sub(r'```.*?```', '', open(path, encoding='utf-8').read(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r'^#{1,6} (.+)$', text, flags=re.M)}


def relative_links(path: str) -> list:
    text = open(path, encoding='utf-8').read()
    return [t for t in LINK.findall(text) if not re.match(r'^[a-z][a-z0-9+.-]*:', t)]


@pytest.mark.parametrize('page', PAGES, ids=lambda p: osp.relpath(p, ROOT))
def test_every_relative_link_and_anchor_exists(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition('#')
        dest = osp.normpath(osp.join(osp.dirname(page), file_part)) if file_part else page
        if not osp.exists(dest):
            broken.append(f'{target}: no {osp.relpath(dest, ROOT)}')
        elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
            broken.append(f'{target}: no heading #{anchor} in {osp.relpath(dest, ROOT)}')
    assert not broken, f'{osp.relpath(page, ROOT)}: ' + '; '.join(broken)


@pytest.mark.parametrize('page', PAGES, ids=lambda p: osp.relpath(p, ROOT))
def test_every_tools_options_and_benchmarks_path_named_exists(page):
    named = {p for found in REPO_PATH.findall(open(page, encoding='utf-8').read()) for p in expand_braces(found)}
    missing = sorted(p for p in named if not osp.exists(osp.join(ROOT, p)))
    assert not missing, f'{osp.relpath(page, ROOT)} names paths that do not exist: {missing}'


def test_the_readme_fits_on_a_few_screens_and_shows_the_page():
    text = open(PAGES[0], encoding='utf-8').read()
    assert len(text.splitlines()) <= 250
    assert '](docs/app_page.png)' in text
    assert '`tools/run.sh demo`' in text or 'tools/run.sh demo' in text


# ------------------------------------------------------------------------------------------------ the whole repo
#: a file path inside the repo, named in code, docs or option files: ends in a file extension
ANY_REPO_FILE = re.compile(r'(?<![\w./<$-])((?:docs|drward|tests|tools|options|benchmarks)/[\w./-]*\.[a-z]{2,9})'
                           r'(?![\w*])')
OUTSIDE = re.compile(r'DESIGN\.md|\.\./shared/|/work/shared')
SECTION = re.compile(r'docs/design\.md ((?:§\d+(?:, )?)+)')
#: made-up names that tests use in error messages, not references
NOT_REFERENCES = {'options/x.yml'}
TEXT_FILES = ('.py', '.md', '.yml', '.yaml', '.sh', '.cfg', '.toml', '.txt', '.importlinter')


def repo_text_files() -> list:
    """Every tracked (or new, not ignored) text file of the repo: code, docs, option files, scripts."""
    import subprocess
    listed = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                            capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 else [
        osp.relpath(osp.join(d, f), ROOT) for d, _, files in __import__('os').walk(ROOT) if '/.' not in d
        for f in files]
    return sorted(n for n in names if n.endswith(TEXT_FILES) and osp.isfile(osp.join(ROOT, n)))


def design_sections() -> set:
    text = open(osp.join(ROOT, 'docs', 'design.md'), encoding='utf-8').read()
    return set(re.findall(r'^## (\d+)\. ', text, flags=re.M))


def test_no_reference_in_the_repo_points_at_a_file_that_is_not_in_it():
    sections, broken = design_sections(), []
    for name in repo_text_files():
        if name == 'tests/test_docs_links.py':
            continue
        text = open(osp.join(ROOT, name), encoding='utf-8', errors='replace').read()
        for match in OUTSIDE.finditer(text):
            broken.append(f'{name}: {match.group(0)} (outside the repo)')
        for path in set(ANY_REPO_FILE.findall(text)) - NOT_REFERENCES:
            if not any(osp.exists(osp.join(ROOT, p)) for p in expand_braces(path)):
                broken.append(f'{name}: {path}')
        for group in SECTION.findall(text):
            broken += [f'{name}: docs/design.md §{n} (no such section)' for n in re.findall(r'§(\d+)', group)
                       if n not in sections]
    assert not broken, 'references to files or sections not in the repo:\n' + '\n'.join(sorted(set(broken)))
