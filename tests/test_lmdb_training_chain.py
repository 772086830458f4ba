"""The FFHQ preparation chain at tiny size, as README "Preparing FFHQ" runs it: demo faces → tools/make_lmdb.py →
tools/caption.py (a tiny random BLIP) → both rerun without redoing anything → tools/train.py trains the tiny ReFL
option file from the lmdb (--force_yml), every face with a caption (caption_policy strict)."""
import os

import pytest
from option_files import ROOT, run_tools_train, tools_train_experiment
from test_data_lmdb import load_tool
from tiny_captioners import tiny_blip

from drward.data.caption_store import CaptionFileStore
from drward.data.demo_faces import make_demo_faces


@pytest.mark.heavy
def test_tiny_refl_trains_from_a_captioned_lmdb_made_by_the_tools(tmp_path, capsys):
    faces, lmdb = tmp_path / 'faces', str(tmp_path / 'faces.lmdb')
    make_demo_faces(str(faces), 64, 8)
    for i in range(4, 8):  # half the faces come without a caption: tools/caption.py writes theirs
        os.remove(faces / f'demo_face_00{i}.txt')
    make_lmdb, caption = load_tool('make_lmdb'), load_tool('caption')
    pack, describe = ['--images', str(faces), '--out', lmdb], ['--images', lmdb, '--model', tiny_blip(tmp_path / 'm')]
    assert make_lmdb.main(pack) == 0 and caption.main(describe) == 0
    assert 'captions: 4 written now, 4 already there' in capsys.readouterr().out
    data, captions = os.path.join(lmdb, 'data.mdb'), os.path.join(lmdb, 'captions.tsv')
    before = (os.stat(data).st_mtime_ns, open(captions).read())
    assert make_lmdb.main(pack) == 0 and caption.main(describe) == 0  # the reruns find everything done
    out = capsys.readouterr().out
    assert out.startswith('kept ') and 'captions: 0 written now, 8 already there' in out
    assert (os.stat(data).st_mtime_ns, open(captions).read()) == before
    assert len(CaptionFileStore(captions).captions) == 8

    (tmp_path / 'val_meta.txt').write_text('demo_face_000.png (64,64,3) 1\ndemo_face_005.png (64,64,3) 1\n')
    lmdb_set = ['dataroot_gt=' + lmdb, 'io_backend:type=lmdb', 'demo_faces=false', 'caption_policy=strict']
    with tools_train_experiment('refl_diffbir_tiny.yml', 'pytest_lmdb_chain') as (opt, exp):
        overrides = [f'name={opt["name"]}', 'train:total_iter=2', 'train:frm_update:every=2',
                     'logger:save_checkpoint_freq=2', 'logger:print_freq=1', 'val:val_freq=1000',  # final val only
                     f'datasets:val:meta_info_file={tmp_path / "val_meta.txt"}']
        overrides += [f'datasets:{phase}:{entry}' for phase in ('train', 'val') for entry in lmdb_set]
        result = run_tools_train(os.path.join(ROOT, 'options', 'refl_diffbir_tiny.yml'), '--force_yml', *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
        log = open(next(os.path.join(exp, f) for f in os.listdir(exp) if f.startswith('train_'))).read()
        assert f'FaceDegradationDataset: 8 faces from lmdb {lmdb}, captions from {captions}' in log
        assert 'iter:       2' in log and 'frm_updates: 1.0000e+00' in log
        assert os.path.isfile(os.path.join(exp, 'models', 'net_g_2.safetensors'))
