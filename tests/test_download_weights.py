"""tools/download_weights.py against a loopback mirror (tests/weights_server.py) standing in for every source."""
import hashlib
import importlib.util
import os
import os.path as osp

import pytest
import yaml
from weights_server import CONFIRM_TOKEN, DRIVE_DOWNLOAD, WeightsServer

from drward.utils.options import OptionError, check_weights_before_run
from drward.weights.download import MIRROR_ENV, mirrored, part_path
from drward.weights.manifest import files_for_options, load_manifest, parse_manifest, real_option_files

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
spec = importlib.util.spec_from_file_location('download_weights', osp.join(ROOT, 'tools', 'download_weights.py'))
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

DATA = {name: os.urandom(150_000 + 1000 * i) for i, name in enumerate(('a.bin', 'b.pkl', 'c.pt', 'd.pth', 'e.pth'))}
SOURCES = {
    'a.bin': 'download.pytorch.org/models/a.bin',
    'b.pkl': 'raw.githubusercontent.com/owner/repo/abc123/preset/models/b.pkl',
    'c.pt': 'huggingface.co/owner/repo/resolve/main/c.pt',
    'e.pth': 'example.org/e.pth',
}
DRIVE_ID = '1AbCdEfGhIjKlMnOp'


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def write_manifest(path) -> str:
    files = [
        {'name': 'a.bin', 'sha256': hashlib.sha256(DATA['a.bin']).hexdigest(),
         'sources': ['https://' + SOURCES['a.bin']]},
        {'name': 'b.pkl', 'git_sha1': git_sha1(DATA['b.pkl']), 'sources': ['https://' + SOURCES['b.pkl']]},
        {'name': 'c.pt', 'size': len(DATA['c.pt']), 'sources': ['https://' + SOURCES['c.pt']]},
        {'name': 'd.pth', 'sha256': hashlib.sha256(DATA['d.pth']).hexdigest(), 'size': len(DATA['d.pth']),
         'sources': [f'https://drive.google.com/uc?export=download&id={DRIVE_ID}']},
        {'name': 'e.pth', 'sources': ['https://' + SOURCES['e.pth']]},
    ]
    with open(path, 'w') as f:
        yaml.safe_dump({'files': files}, f)
    return str(path)


def serve(**overrides) -> WeightsServer:
    files = {SOURCES[name]: overrides.get(name, DATA[name]) for name in SOURCES}
    return WeightsServer(files, drive={DRIVE_ID: ('d.pth', overrides.get('d.pth', DATA['d.pth']))})


def run(server, tmp_path, *extra) -> int:
    return tool.main(['--mirror', server.url, '--manifest', write_manifest(tmp_path / 'm.yml'),
                      '--dir', str(tmp_path / 'w'), '--no-progress', *extra])


def test_every_file_is_fetched_and_verified_and_a_rerun_fetches_nothing(tmp_path, capsys):
    with serve() as server:
        assert run(server, tmp_path) == 0
        out = capsys.readouterr().out
        for name, data in DATA.items():
            assert (tmp_path / 'w' / name).read_bytes() == data
        assert sorted(os.listdir(tmp_path / 'w')) == sorted(DATA)  # no partial files left
        # the closing table: how each file was verified, and which source was used
        for name, how in (('a.bin', 'sha256'), ('b.pkl', 'git blob sha1'), ('c.pt', 'size only'),
                          ('d.pth', 'sha256'), ('e.pth', 'not verified')):
            row = next(line for line in out.splitlines() if line.startswith(str(tmp_path / 'w' / name)))
            assert 'fetched' in row and how in row and server.url in row
        assert 'not verified (no hash or size published): e.pth' in out
        # Google Drive: the confirm page's form was followed, with its token, through the mirror
        assert server.requests_for(f'{DRIVE_DOWNLOAD}?id={DRIVE_ID}&export=download&confirm={CONFIRM_TOKEN}')
        fetched = len(server.log)
        assert run(server, tmp_path) == 0
        assert len(server.log) == fetched  # nothing fetched again
        assert capsys.readouterr().out.count('present') == len(DATA)
        assert run(server, tmp_path, '--check') == 0
        assert len(server.log) == fetched


@pytest.mark.parametrize('name,bad', [('a.bin', 'other bytes'), ('d.pth', 'other bytes'), ('c.pt', 'truncated')])
def test_wrong_or_truncated_bytes_are_refused_and_nothing_is_placed(tmp_path, capsys, name, bad):
    wrong = os.urandom(len(DATA[name])) if bad == 'other bytes' else DATA[name][:-5000]
    with serve(**{name: wrong}) as server:
        assert run(server, tmp_path) == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if 'error:' in line)
    assert name in line and server.url in line and 'not placed' in line
    if name == 'c.pt':
        assert f'size expected {len(DATA[name])}, got {len(wrong)}' in line
    else:
        assert hashlib.sha256(DATA[name]).hexdigest() in line and hashlib.sha256(wrong).hexdigest() in line
    dest = tmp_path / 'w' / name
    assert not dest.exists() and not osp.exists(part_path(str(dest)))
    assert (tmp_path / 'w' / 'b.pkl').exists()  # the other files are still fetched
    # --check on a corrupted file in place says mismatch
    dest.write_bytes(wrong)
    with serve() as server:
        assert run(server, tmp_path, '--check') == 1
    assert 'mismatch' in capsys.readouterr().out


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path):
    with serve() as server:
        server.drop_once.add(SOURCES['a.bin'])  # the first transfer stops halfway
        assert run(server, tmp_path) == 0
        ranges = [rng for _, rng in server.requests_for(SOURCES['a.bin'])]
        assert ranges == [None, f'bytes={len(DATA["a.bin"]) // 2}-']
    assert (tmp_path / 'w' / 'a.bin').read_bytes() == DATA['a.bin']


def test_a_partial_file_left_by_a_killed_run_is_resumed(tmp_path):
    dest = tmp_path / 'w' / 'c.pt'
    dest.parent.mkdir()
    with open(part_path(str(dest)), 'wb') as f:
        f.write(DATA['c.pt'][:1234])
    with serve() as server:
        assert run(server, tmp_path) == 0
        assert [rng for _, rng in server.requests_for(SOURCES['c.pt'])] == ['bytes=1234-']
    assert dest.read_bytes() == DATA['c.pt']


def test_the_mirror_comes_from_the_environment_and_maps_host_path_and_query(tmp_path, monkeypatch):
    assert mirrored('https://drive.google.com/uc?export=download&id=X', 'http://m:1/') == \
        'http://m:1/drive.google.com/uc?export=download&id=X'
    with serve() as server:
        monkeypatch.setenv(MIRROR_ENV, server.url)
        assert tool.main(['--manifest', write_manifest(tmp_path / 'm.yml'), '--dir', str(tmp_path / 'w'),
                          '--no-progress']) == 0


def test_the_package_manifest_is_valid_and_covers_every_real_option_file():
    manifest = load_manifest()
    wanted, _ = files_for_options(real_option_files(osp.join(ROOT, 'options')), manifest, ROOT)
    assert {wf.name for wf, _ in wanted} >= {'v2-1_512-ema-pruned.ckpt', 'v1_face.pth', 'face_swinir_v1.ckpt',
                                              'HPS_v2_compressed.pt', 'osediff_face.pkl', 'FaceRewardModel.pth',
                                              'vgg16-397923af.pth'}
    assert all(dest.startswith(osp.join(ROOT, 'weights')) for _, dest in wanted)
    sd = next(wf for wf in manifest if wf.name == 'v2-1_512-ema-pruned.ckpt')
    assert sd.sha256 == '88ecb782561455673c4b78d05093494b9c539fc6bfc08f3a9a4a0dd7b0b10f36' and len(sd.sources) > 1


def test_a_hash_prefix_or_an_unknown_key_in_a_manifest_is_refused():
    with pytest.raises(OptionError, match='a prefix is not a hash'):
        parse_manifest({'files': [{'name': 'x', 'sha256': '62fb6605', 'sources': ['https://h/x']}]})
    with pytest.raises(OptionError, match='unknown option key'):
        parse_manifest({'files': [{'name': 'x', 'sha': 'ab', 'sources': ['https://h/x']}]})


def test_the_missing_weight_error_names_the_fetch_command(tmp_path, capsys):
    opt = tmp_path / 'o.yml'
    opt.write_text(yaml.safe_dump({'network_g': {'sd_checkpoint': str(tmp_path / 'v2-1_512-ema-pruned.ckpt')}}))
    with pytest.raises(SystemExit):
        check_weights_before_run(['train.py', '-opt', str(opt)])
    assert f'fetch it with: python tools/download_weights.py -opt {osp.relpath(opt)}' in capsys.readouterr().out


def test_without_a_mirror_hugging_face_goes_through_huggingface_hub_and_drive_through_gdown(tmp_path, monkeypatch):
    import gdown
    import huggingface_hub

    from drward.weights.download import fetch_file
    from drward.weights.manifest import WeightFile
    calls = []
    cached = tmp_path / 'hub_cache_file'
    cached.write_bytes(DATA['c.pt'])

    def hf_hub_download(repo_id, filename, revision):
        calls.append(('hf', repo_id, filename, revision))
        return str(cached)

    def download(id, output, quiet, resume):  # noqa: A002  (gdown's keyword)
        calls.append(('gdown', id, resume))
        with open(output, 'wb') as f:
            f.write(DATA['d.pth'])
        return output

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', hf_hub_download)
    monkeypatch.setattr(gdown, 'download', download)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    hub = WeightFile('c.pt', ['https://' + SOURCES['c.pt']], size=len(DATA['c.pt']))
    drive = WeightFile('d.pth', [f'https://drive.google.com/uc?export=download&id={DRIVE_ID}'],
                       sha256=hashlib.sha256(DATA['d.pth']).hexdigest())
    assert fetch_file(hub, str(tmp_path / 'w' / 'c.pt'), progress=False).status == 'fetched'
    assert fetch_file(drive, str(tmp_path / 'w' / 'd.pth'), progress=False).status == 'fetched'
    assert calls == [('hf', 'owner/repo', 'c.pt', 'main'), ('gdown', DRIVE_ID, True)]
    assert (tmp_path / 'w' / 'c.pt').read_bytes() == DATA['c.pt'] and cached.exists()  # the hub's cache is kept
