"""tools/caption.py: a caption per face from a local image-to-text model (tiny random BLIP / LLaVA), written beside
the images or into one caption file, resumable; the caption stores' crash rules."""
import os

import numpy as np
import pytest
from test_data_lmdb import load_tool
from tiny_captioners import tiny_blip, tiny_llava

from drward.data import captioner as captioner_module
from drward.data.caption_store import CaptionFileStore
from drward.data.captioner import DEFAULT_INSTRUCTION, FaceCaptioner, caption_images
from drward.data.demo_faces import make_demo_faces
from drward.data.face_degradation_dataset import FaceDegradationDataset
from drward.data.image_io import CaptionFileError
from drward.data.image_source import ImageSource
from drward.data.lmdb_pack import pack_folder


@pytest.fixture(scope='module')
def blip_dir(tmp_path_factory):
    return tiny_blip(tmp_path_factory.mktemp('tiny_blip'))


@pytest.fixture(scope='module')
def tool():
    return load_tool('caption')


def uncaptioned_faces(folder, count=5):
    make_demo_faces(str(folder), 32, count)
    for name in os.listdir(folder):
        if name.endswith('.txt'):
            os.remove(os.path.join(folder, name))
    return folder


def test_a_missing_model_folder_is_one_clear_error(tmp_path, tool, capsys):
    uncaptioned_faces(tmp_path / 'faces', 1)
    assert tool.main(['--images', str(tmp_path / 'faces'), '--model', str(tmp_path / 'nowhere')]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f'caption model folder {tmp_path / "nowhere"} does not exist' in err
    (tmp_path / 'empty').mkdir()
    assert tool.main(['--images', str(tmp_path / 'faces'), '--model', str(tmp_path / 'empty')]) == 1
    assert 'has no config.json' in capsys.readouterr().err


def test_captions_go_beside_each_image_and_a_rerun_redoes_nothing(tmp_path, blip_dir, tool, capsys, monkeypatch):
    faces = uncaptioned_faces(tmp_path / 'faces')
    (faces / 'demo_face_001.txt').write_text('written by hand\n')
    (faces / 'demo_face_004.png').write_bytes(b'not a png')
    assert tool.main(['--images', str(faces), '--model', blip_dir, '--batch-size', '2']) == 0
    out = capsys.readouterr().out
    assert '3 written now, 1 already there, 1 unreadable, of 5 faces' in out and 'demo_face_004' in out
    assert (faces / 'demo_face_001.txt').read_text() == 'written by hand\n'
    for i in (0, 2, 3):  # BLIP continues the default prefix
        assert (faces / f'demo_face_00{i}.txt').read_text().startswith('a photo of')
    stamps = {name: os.stat(faces / name).st_mtime_ns for name in os.listdir(faces) if name.endswith('.txt')}

    def no_model(*args, **kwargs):
        raise AssertionError('the model must not be loaded when every readable face has a caption')
    monkeypatch.setattr(captioner_module.FaceCaptioner, '__init__', no_model)
    (faces / 'demo_face_004.png').unlink()
    assert tool.main(['--images', str(faces), '--model', blip_dir]) == 0
    assert '0 written now, 4 already there' in capsys.readouterr().out
    assert stamps == {name: os.stat(faces / name).st_mtime_ns for name in os.listdir(faces) if name.endswith('.txt')}


def test_an_lmdb_is_captioned_into_its_captions_tsv_which_the_dataset_reads(tmp_path, blip_dir, tool, capsys):
    faces = uncaptioned_faces(tmp_path / 'faces', 4)
    (faces / 'demo_face_000.txt').write_text('packed caption\n')
    lmdb = str(tmp_path / 'faces.lmdb')
    pack_folder(str(faces), lmdb)
    assert tool.main(['--images', lmdb, '--model', blip_dir, '--prompt', 'a face with']) == 0
    assert '3 written now, 1 already there' in capsys.readouterr().out
    captions = CaptionFileStore(os.path.join(lmdb, 'captions.tsv')).captions
    assert captions['demo_face_000'] == 'packed caption' and captions['demo_face_003'].startswith('a face with')
    dataset = FaceDegradationDataset(dict(dataroot_gt=lmdb, io_backend={'type': 'lmdb'}, gt_size=32,
                                          caption_policy='strict'))
    assert dataset.captions == [captions[f'demo_face_00{i}'] for i in range(4)]


def test_an_interrupted_run_keeps_its_finished_batches_and_the_rerun_does_the_rest(tmp_path):
    faces = uncaptioned_faces(tmp_path / 'faces', 5)
    source, store = ImageSource('test', None, str(faces)), CaptionFileStore(str(tmp_path / 'caps.tsv'))
    seen = []

    def dies_on_the_second_batch(images):
        seen.append(len(images))
        if len(seen) == 2:
            raise KeyboardInterrupt
        return [f'face {len(seen)}'] * len(images)
    key = lambda name: os.path.splitext(os.path.basename(name))[0]  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        caption_images(source, store, key, dies_on_the_second_batch, batch_size=2)
    assert sorted(CaptionFileStore(str(tmp_path / 'caps.tsv')).captions) == ['demo_face_000', 'demo_face_001']
    later = []
    report = caption_images(source, CaptionFileStore(str(tmp_path / 'caps.tsv')), key,
                            lambda images: later.append(len(images)) or ['later'] * len(images), batch_size=2)
    assert later == [2, 1] and report.already == 2 and report.captioned == 3


def test_a_chat_model_answers_the_instruction_and_the_prompt_is_cut_off(tmp_path):
    captioner = FaceCaptioner(tiny_llava(tmp_path / 'llava'), max_new_tokens=5)
    assert captioner.chat and captioner.prompt == DEFAULT_INSTRUCTION
    assert captioner.text.startswith('USER: <image> ') and captioner.text.endswith('ASSISTANT:')
    images = [np.full((40, 40, 3), value, np.uint8) for value in (30, 200)]
    captions = captioner.caption(images)
    inputs = captioner.processor(images=images, text=[captioner.text] * 2, return_tensors='pt', padding=True)
    generated = captioner.model.generate(**inputs, max_new_tokens=5, do_sample=False)
    answers = captioner.processor.batch_decode(generated[:, inputs['input_ids'].shape[1]:], skip_special_tokens=True)
    assert captions == [' '.join(answer.split()) for answer in answers]


def test_a_torn_last_line_is_ended_or_dropped(tmp_path, basicsr_warnings):
    ended = tmp_path / 'ended.tsv'
    ended.write_text('a\tfirst face\nb\tsecond fa')
    assert CaptionFileStore(str(ended)).captions == {'a': 'first face', 'b': 'second fa'}
    assert ended.read_text().endswith('second fa\n')
    torn = tmp_path / 'torn.tsv'
    torn.write_text('a\tfirst face\nb_hal')
    store = CaptionFileStore(str(torn))
    assert store.captions == {'a': 'first face'} and 'dropped a torn last line' in basicsr_warnings.text
    store.add([('b', 'second\tface\n with breaks')])
    assert torn.read_text() == 'a\tfirst face\nb\tsecond face with breaks\n'
    with pytest.raises(CaptionFileError, match='name a .tsv file'):
        CaptionFileStore(str(tmp_path / 'caps.json'))
