"""Atomic checkpoint writes, --auto_resume's choice of state, training states with random streams, and the sampler
that continues an interrupted epoch."""
import os
import random

import numpy as np
import pytest
import torch

from drward.models.training_state import capture_random_state, restore_random_state
from drward.utils.atomic_io import atomic_save, atomic_write, remove_stale_temp_files
from drward.utils.resumable_sampler import ResumableSampler, SampleKey, sample_seed
from drward.utils.resume import newest_loadable_state, samples_done_in_epoch


def test_a_writer_failing_mid_file_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'net_g_10.pth'
    atomic_save({'params': {'w': torch.ones(3)}}, path)
    with pytest.raises(RuntimeError, match='disk full') as failure:
        with atomic_write(str(path)) as tmp:
            with open(tmp, 'wb') as handle:
                handle.write(b'half a checkpoint')
            raise RuntimeError('disk full')
    # the error says how much had been written and what the disk has left (a full disk is otherwise a bare
    # zip-writer 'unexpected pos' error)
    note = ' '.join(getattr(failure.value, '__notes__', []))
    assert str(tmp_path) in note and 'GiB free' in note and 'destination file is unchanged' in note
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['net_g_10.pth']


def test_atomic_save_picks_the_writer_by_suffix(tmp_path):
    from safetensors.torch import load_file
    tensors = {'unet.a': torch.arange(4.0)}
    atomic_save(tensors, tmp_path / 'lora.safetensors', metadata={'layout': '{}'})
    assert torch.equal(load_file(str(tmp_path / 'lora.safetensors'))['unet.a'], tensors['unet.a'])
    with pytest.raises(ValueError, match='metadata'):
        atomic_save(tensors, tmp_path / 'x.pth', metadata={'a': 'b'})


def _write_run(folder, iters, torn=()):
    states, models = folder / 'training_states', folder / 'models'
    states.mkdir(parents=True)
    models.mkdir()
    for it in iters:
        atomic_save({'iter': it, 'epoch': 0}, states / f'{it}.state')
        for label in ('g', 'frm'):
            atomic_save({'params': {'w': torch.full((2,), float(it))}}, models / f'net_{label}_{it}.pth')
    for path in torn:  # what a kill in the middle of a plain torch.save leaves
        data = (folder / path).read_bytes()
        (folder / path).write_bytes(data[:len(data) // 2])
    (states / '.30.state.123.abcd.tmp').write_bytes(b'unfinished')
    return str(states), str(models)


@pytest.mark.parametrize('torn', ['training_states/30.state', 'models/net_frm_30.pth'])
def test_auto_resume_skips_a_state_whose_files_do_not_all_load(tmp_path, torn):
    states, models = _write_run(tmp_path, [10, 20, 30], torn=[torn])
    path, state, notes = newest_loadable_state(states, models)
    assert path == os.path.join(states, '20.state') and state['iter'] == 20
    assert any('removed the unfinished write' in note for note in notes)
    assert any(note.startswith(f'skipping training state {os.path.join(states, "30.state")}') for note in notes)
    assert not [name for name in os.listdir(states) if name.endswith('.tmp')]


def test_auto_resume_with_every_state_torn_starts_afresh(tmp_path):
    states, models = _write_run(tmp_path, [10], torn=['training_states/10.state'])
    assert newest_loadable_state(states, models)[:2] == (None, None)
    assert remove_stale_temp_files(str(tmp_path / 'nowhere')) == []


@pytest.mark.parametrize('location', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device'))])
def test_random_streams_round_trip_through_a_weights_only_file(tmp_path, location):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1), np.random.seed(2), random.seed(4)
    atomic_save(capture_random_state({'sampling': gen}), tmp_path / 'rng.state')
    expected = (torch.randn(3, generator=gen), torch.randn(3), np.random.rand(3), random.random())
    state = torch.load(tmp_path / 'rng.state', weights_only=True, map_location=location)  # BasicSR: onto the GPU
    restore_random_state(state, {'sampling': gen})
    again = (torch.randn(3, generator=gen), torch.randn(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])
    assert np.array_equal(expected[2], again[2]) and expected[3] == again[3]
    with pytest.raises(KeyError, match='frm_update'):
        restore_random_state(capture_random_state({}), {'frm_update': gen})


def test_sampler_keeps_basicsr_order_and_starts_an_epoch_mid_way():
    from basicsr.data.data_sampler import EnlargedSampler
    dataset = list(range(10))
    ours, theirs = ResumableSampler(dataset, 1, 0, ratio=2, seed=7), EnlargedSampler(dataset, 1, 0, ratio=2)
    ours.set_epoch(3), theirs.set_epoch(3)
    keys = list(ours)
    assert keys == list(theirs) and all(isinstance(k, SampleKey) and k.epoch == 3 and k.seed == 7 for k in keys)
    assert [k.position for k in keys] == list(range(20))  # unique within the epoch, even for repeated indices
    assert len({sample_seed(k) for k in keys}) == 20
    ours.start_at(3, 6)
    assert list(ours) == keys[6:] and list(ours) == keys  # the offset applies to one pass only


def test_samples_done_in_epoch_follows_iterations_and_rejects_what_does_not_fit():
    assert samples_done_in_epoch(resume_iter=7, epoch=1, batches_per_epoch=5, batch_size=3) == 6
    assert samples_done_in_epoch(resume_iter=10, epoch=1, batches_per_epoch=5, batch_size=3) == 15  # epoch's end
    assert samples_done_in_epoch(resume_iter=12, epoch=1, batches_per_epoch=5, batch_size=3) is None
