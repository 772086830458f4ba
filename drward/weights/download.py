"""Fetch published weight files, verify them, and only then move them into place.

For each file of the manifest (:mod:`drward.weights.manifest`) the sources are tried in order:

* ``https://huggingface.co/REPO/resolve/REV/FILE`` through ``huggingface_hub`` (resumable, its cache);
* ``https://drive.google.com/uc?...id=ID`` through ``gdown`` (Drive's "can't scan for viruses" confirm page);
* anything else over HTTP(S) with resume: the bytes go to a hidden ``.NAME.part`` beside the destination, and a
  second attempt (or a later run) asks for the rest with ``Range: bytes=N-``.

``mirror`` (``--mirror URL`` or ``$DRWARD_WEIGHTS_MIRROR``) maps every source ``https://HOST/PATH?QUERY`` to
``URL/HOST/PATH?QUERY``; everything then goes over plain HTTP with resume, Google Drive's confirm page included
(parsed by gdown's own ``get_url_from_gdrive_confirmation``, the next URL mapped through the mirror again).

A download is checked (sha256, else the git blob sha1, else the size) before it is renamed onto the destination
(:func:`drward.utils.atomic_io.place_file`); a mismatch deletes the partial file, names the file, the source and
both values, and places nothing.
"""
from __future__ import annotations

import hashlib
import os
import os.path as osp
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from typing import Callable, List, Optional

from drward.utils.atomic_io import place_file
from drward.weights.manifest import WeightFile

MIRROR_ENV = 'DRWARD_WEIGHTS_MIRROR'
CHUNK = 1 << 20
ATTEMPTS = 3  # per source: a dropped connection is resumed this many times before the next source is tried


class FetchError(RuntimeError):
    """A source could not deliver the file (HTTP error, refused, Drive page without a download link)."""


class VerificationError(FetchError):
    """The bytes a source delivered are not the published file."""


@dataclass
class Outcome:
    """What happened to one file: ``fetched``, ``present`` (already there and verified), ``ok`` / ``missing`` /
    ``mismatch`` (``--check``) or ``failed``."""
    name: str
    dest: str
    status: str
    verified_by: str
    source: str = ''
    size: Optional[int] = None
    errors: tuple = ()


# --- checking -------------------------------------------------------------------------------------------------

def file_digests(path: str, progress: bool = False, label: Optional[str] = None) -> dict:
    """``{'sha256': hex, 'git_sha1': hex, 'size': bytes}`` of a file, read once. The git blob id is
    ``sha1(b"blob <size>\\0" + content)``."""
    size = osp.getsize(path)
    sha256, git_sha1 = hashlib.sha256(), hashlib.sha1(b'blob %d\0' % size)
    with open(path, 'rb') as f, _bar(size, f'verify {label or osp.basename(path)}', progress) as bar:
        while chunk := f.read(CHUNK):
            sha256.update(chunk)
            git_sha1.update(chunk)
            bar.update(len(chunk))
    return {'sha256': sha256.hexdigest(), 'git_sha1': git_sha1.hexdigest(), 'size': size}


def mismatch(wf: WeightFile, path: str, progress: bool = False) -> Optional[tuple]:
    """``None`` when ``path`` is ``wf`` as published (by its strongest check), else ``(what, expected, got)``."""
    if wf.verified_by == 'not verified':
        return None
    if wf.size is not None and osp.getsize(path) != wf.size:  # cheap, and catches a truncated file early
        return 'size', str(wf.size), str(osp.getsize(path))
    if wf.verified_by == 'size only':
        return None
    digests = file_digests(path, progress, wf.name)
    key = 'sha256' if wf.sha256 else 'git_sha1'
    expected = getattr(wf, key)
    return None if digests[key] == expected else (key, expected, digests[key])


# --- sources --------------------------------------------------------------------------------------------------

def mirrored(url: str, mirror: Optional[str]) -> str:
    """``https://HOST/PATH?QUERY`` -> ``MIRROR/HOST/PATH?QUERY`` (unchanged without a mirror)."""
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    tail = parts.netloc + parts.path + (f'?{parts.query}' if parts.query else '')
    return f'{mirror.rstrip("/")}/{tail}'


def source_kind(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or ''
    if host == 'huggingface.co' and '/resolve/' in url:
        return 'huggingface'
    if host in ('drive.google.com', 'docs.google.com'):
        return 'gdrive'
    return 'http'


def part_path(dest: str) -> str:
    """Where a download of ``dest`` is kept until verified (a later run resumes it)."""
    folder, name = osp.split(dest)
    return osp.join(folder, f'.{name}.part')


def _bar(total: Optional[int], desc: str, enabled: bool, initial: int = 0):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit='B', unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False)


def _open(url: str, offset: int, timeout: float):
    headers = {'User-Agent': 'drward-download-weights'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _stream(response, part: str, offset: int, name: str, progress: bool) -> None:
    """Write a response body into ``part`` (appended when the server honoured the Range request); raise
    :class:`ConnectionError` when the body stops before its announced length."""
    if offset and response.status != 206:
        offset = 0  # the server sent the whole file: start over
    length = response.headers.get('Content-Length')
    total = offset + int(length) if length is not None else None
    written = offset
    with open(part, 'ab' if offset else 'wb') as f, _bar(total, name, progress, offset) as bar:
        while chunk := response.read(CHUNK):
            f.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    if total is not None and written < total:
        raise ConnectionError(f'connection closed after {written} of {total} bytes')


def http_download(url: str, part: str, name: str, progress: bool = True, timeout: float = 60.0,
                  on_html: Optional[Callable[[str], str]] = None) -> None:
    """Download ``url`` into ``part``, resuming a partial ``part`` with a Range request, up to :data:`ATTEMPTS`
    times. An HTML answer goes to ``on_html`` (Google Drive's confirm page), which returns the URL to fetch."""
    last_error: Optional[BaseException] = None
    for _ in range(ATTEMPTS):
        offset = osp.getsize(part) if osp.exists(part) else 0
        try:
            with _open(url, offset, timeout) as response:
                kind = response.headers.get('Content-Type', '')
                if on_html and kind.startswith('text/html') and 'Content-Disposition' not in response.headers:
                    url, on_html = on_html(response.read().decode('utf-8', 'replace')), None
                    continue
                _stream(response, part, offset, name, progress)
            return
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # nothing left to send: the partial file is complete
                return
            raise FetchError(f'HTTP {error.code} {error.reason}') from error
        except (urllib.error.URLError, HTTPException, ConnectionError, socket.timeout, OSError) as error:
            last_error = error  # dropped or refused: try again, resuming what arrived
    raise FetchError(f'{ATTEMPTS} attempts failed, last: {last_error}')


def drive_confirm_handler(mirror: Optional[str]) -> Callable[[str], str]:
    """Google Drive answers large files with an HTML page ("can't scan for viruses") holding the real download
    URL (a form with a confirm token, or a link); gdown's parser reads it, the mirror maps it."""
    def next_url(page: str) -> str:
        from gdown.download import get_url_from_gdrive_confirmation
        from gdown.exceptions import FileURLRetrievalError
        try:
            return mirrored(get_url_from_gdrive_confirmation(page), mirror)
        except FileURLRetrievalError as error:
            raise FetchError(f'Google Drive gave no download link: {error}') from error
    return next_url


def huggingface_download(url: str, part: str, progress: bool) -> None:
    """``https://huggingface.co/REPO/resolve/REV/FILE`` through huggingface_hub (its cache, resumable), then
    linked (or copied) into ``part``."""
    from huggingface_hub import hf_hub_download
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path).strip('/')
    repo, _, rest = path.partition('/resolve/')
    revision, _, filename = rest.partition('/')
    try:
        cached = hf_hub_download(repo_id=repo, filename=filename, revision=revision)
    except Exception as error:  # hub errors are many classes (404, gated, offline); all mean "next source"
        raise FetchError(f'huggingface_hub: {type(error).__name__}: {error}') from error
    if osp.exists(part):
        os.remove(part)
    try:
        os.link(cached, part)
    except OSError:
        shutil.copyfile(cached, part)


def gdrive_download(url: str, part: str, progress: bool) -> None:
    import gdown
    file_id = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get('id', [''])[0]
    try:
        gdown.download(id=file_id, output=part, quiet=not progress, resume=True)
    except Exception as error:  # gdown raises its own and requests' errors
        raise FetchError(f'gdown: {type(error).__name__}: {error}') from error


def download_from(url: str, part: str, name: str, mirror: Optional[str], progress: bool) -> None:
    kind = source_kind(url)
    if mirror:  # a mirror is plain HTTP for every kind of source
        on_html = drive_confirm_handler(mirror) if kind == 'gdrive' else None
        http_download(mirrored(url, mirror), part, name, progress, on_html=on_html)
    elif kind == 'huggingface':
        huggingface_download(url, part, progress)
    elif kind == 'gdrive':
        gdrive_download(url, part, progress)
    else:
        http_download(url, part, name, progress)


# --- one file -------------------------------------------------------------------------------------------------

def check_file(wf: WeightFile, dest: str, progress: bool = False) -> Outcome:
    """``--check``: is ``dest`` there and the published file?"""
    if not osp.isfile(dest):
        return Outcome(wf.name, dest, 'missing', wf.verified_by)
    bad = mismatch(wf, dest, progress)
    errors = (f'{dest}: {bad[0]} expected {bad[1]}, got {bad[2]}',) if bad else ()
    return Outcome(wf.name, dest, 'mismatch' if bad else 'ok', wf.verified_by, size=osp.getsize(dest), errors=errors)


def fetch_file(wf: WeightFile, dest: str, mirror: Optional[str] = None, progress: bool = True) -> Outcome:
    """Make ``dest`` the published ``wf``: skip it when present and verified, else try each source until one
    delivers verified bytes, which are then renamed onto ``dest``. Nothing is placed on failure."""
    if osp.isfile(dest) and mismatch(wf, dest, progress) is None:
        return Outcome(wf.name, dest, 'present', wf.verified_by, size=osp.getsize(dest))
    os.makedirs(osp.dirname(dest) or '.', exist_ok=True)
    part = part_path(dest)
    errors: List[str] = []
    for url in wf.sources:
        shown = mirrored(url, mirror)
        try:
            download_from(url, part, wf.name, mirror, progress)
            bad = mismatch(wf, part, progress)
            if bad:
                raise VerificationError(f'{wf.name} from {shown}: {bad[0]} expected {bad[1]}, got {bad[2]}; '
                                        'not placed')
        except FetchError as error:
            if isinstance(error, VerificationError) and osp.exists(part):
                os.remove(part)  # wrong bytes: never resume from them
            errors.append(str(error) if isinstance(error, VerificationError) else f'{wf.name} from {shown}: {error}')
            continue
        size = osp.getsize(part)
        place_file(part, dest)
        return Outcome(wf.name, dest, 'fetched', wf.verified_by, source=shown, size=size, errors=tuple(errors))
    return Outcome(wf.name, dest, 'failed', wf.verified_by, errors=tuple(errors))


def mirror_from_env(mirror: Optional[str]) -> Optional[str]:
    return mirror or os.environ.get(MIRROR_ENV) or None
