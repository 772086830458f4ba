"""IQA metrics: local weights folder, one-line errors for missing files, BasicSR's calling convention."""
import os

import numpy as np
import pytest
import scipy.io
from basicsr.metrics import calculate_metric, calculate_niqe, calculate_psnr
from skimage import data

from drward.metrics.metric_utils import bgr_to_rgb, bgr_to_tensor, clear_built_metrics
from drward.utils.options import MissingWeightsError, OptionError
from drward.weights.pyiqa import REQUIRED_FILES, missing_files


@pytest.fixture(scope='module')
def face_bgr():
    return np.ascontiguousarray(data.astronaut()[40:200:2, 140:300:2, ::-1])  # 80² BGR face crop


@pytest.mark.parametrize('kind,missing', [
    ('calculate_musiq', 'pyiqa/musiq_koniq_ckpt-e95806b9.pth'),
    ('calculate_maniqa', 'pyiqa/ckpt_koniq10k.pt'),
    ('calculate_clipiqa', 'clip/RN50.pt'),
    ('calculate_aesthetic', 'clip/ViT-L-14.pt'),
    ('calculate_lpips', 'checkpoints/alexnet-owt-7be5be79.pth'),
])
def test_missing_weights_raise_one_line_naming_the_file(face_bgr, tmp_path, kind, missing):
    with pytest.raises(MissingWeightsError) as error:
        calculate_metric({'img': face_bgr, 'img2': face_bgr}, {'type': kind, 'weights_dir': str(tmp_path)})
    message = str(error.value)
    assert '\n' not in message
    assert str(tmp_path / missing) in message and 'official file: http' in message


def test_fid_without_reference_statistics_names_the_missing_file(tmp_path):
    from drward.metrics.iqa_metric import calculate_fid
    with pytest.raises(MissingWeightsError, match='ffhq_clean_trainval70k_512.npz'):
        calculate_fid(str(tmp_path), weights_dir=str(tmp_path))
    with pytest.raises(TypeError, match='set-level'):
        calculate_fid(img=np.zeros((8, 8, 3), np.uint8))


def test_pyiqa_metric_reads_its_file_from_the_weights_folder(face_bgr, tmp_path):
    """NIQE's parameter file written from BasicSR's own NIQE parameters: pyiqa's NIQE then agrees with BasicSR's."""
    import basicsr
    params = np.load(os.path.join(os.path.dirname(basicsr.__file__), 'metrics', 'niqe_pris_params.npz'))
    assert missing_files('niqe', str(tmp_path)) == [str(tmp_path / REQUIRED_FILES['niqe'][0])]
    (tmp_path / 'pyiqa').mkdir()
    scipy.io.savemat(tmp_path / 'pyiqa' / 'niqe_modelparameters.mat',
                     {'mu_prisparam': params['mu_pris_param'], 'cov_prisparam': params['cov_pris_param']})
    img = np.ascontiguousarray(data.astronaut()[::2, ::2, ::-1])
    ours = calculate_metric({'img': img}, {'type': 'calculate_pyiqa', 'metric': 'niqe', 'weights_dir': str(tmp_path)})
    assert ours == pytest.approx(calculate_niqe(img, crop_border=0), abs=0.25)
    clear_built_metrics()


def test_pyiqa_psnr_equals_basicsr_psnr_on_the_same_images(face_bgr):
    other = np.ascontiguousarray(face_bgr[:, ::-1])
    ours = calculate_metric({'img': face_bgr, 'img2': other}, {'type': 'calculate_pyiqa', 'metric': 'psnr'})
    assert ours == pytest.approx(calculate_psnr(face_bgr, other, crop_border=0), abs=1e-4)


def test_lpips_is_zero_for_identical_images_and_positive_otherwise(face_bgr):
    opts = {'type': 'calculate_lpips', 'random_backbone': True}
    assert calculate_metric({'img': face_bgr, 'img2': face_bgr}, opts) == pytest.approx(0.0, abs=1e-6)
    assert calculate_metric({'img': face_bgr, 'img2': 255 - face_bgr}, opts) > 0.01


def test_unknown_option_lists_accepted_keys(face_bgr):
    with pytest.raises(OptionError, match="unknown option key.*'weight_dir'.*accepted keys"):
        calculate_metric({'img': face_bgr}, {'type': 'calculate_musiq', 'weight_dir': 'x'})


def test_bgr_images_become_rgb_tensors_in_unit_range(face_bgr):
    tensor = bgr_to_tensor(face_bgr)
    assert tensor.shape == (1, 3, 80, 80) and 0 <= tensor.min() and tensor.max() <= 1
    assert np.allclose(tensor[0, 0].numpy() * 255, face_bgr[..., 2], atol=1e-3)  # channel 0 is red
    assert bgr_to_rgb(face_bgr[..., 0]).shape == (80, 80, 3)  # grey → three channels
