"""The CUDA paths, checked on the CPU by simulating what CUDA would report (no GPU in CI): the bf16 advice on a
pre-Ampere GPU, pinned non-blocking host-to-device copies of the DDIM noise, the batched log read."""
import torch

from drward.diffusion import ddim
from drward.utils import precision_check


def test_bf16_on_a_pre_ampere_gpu_gets_advice_to_use_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda index=None: (7, 5))
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda index=None: 'Tesla T4')
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    advice = precision_check.bf16_advice(torch.device('cuda'))
    assert 'Tesla T4 (compute capability 7.5)' in advice and "mixed_precision: 'no'" in advice


def test_bf16_on_an_ampere_gpu_needs_no_advice(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda index=None: (8, 0))
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda index=None: 'NVIDIA A100')
    assert precision_check.bf16_advice(torch.device('cuda:0')) is None


def test_host_noise_goes_to_cuda_pinned_and_non_blocking(monkeypatch):
    calls = []

    class FakeHost(torch.Tensor):
        pass

    def fake_pin(self):
        calls.append('pin')
        return self

    def fake_to(self, *args, **kwargs):
        calls.append(('to', str(args[0]), kwargs.get('non_blocking')))
        return self
    monkeypatch.setattr(torch.Tensor, 'pin_memory', fake_pin)
    monkeypatch.setattr(torch.Tensor, 'to', fake_to)
    ddim.host_to_device(torch.zeros(2), torch.device('cuda:0'))
    assert calls == ['pin', ('to', 'cuda:0', True)]
    calls.clear()
    ddim.host_to_device(torch.zeros(2), torch.device('cpu'))
    assert calls == [('to', 'cpu', None)]  # CPU runs: a plain .to, no pinning


def test_gradients_are_all_reduced_in_a_few_buckets_of_one_dtype():
    from drward.utils.distributed import gradient_buckets
    grads = [torch.zeros(1000) for _ in range(300)] + [torch.zeros(10, dtype=torch.float64), torch.zeros(5)]
    buckets = gradient_buckets(grads, bucket_bytes=400_000)  # 100 fp32 tensors of 4,000 bytes per bucket
    assert [len(b) for b in buckets] == [100, 100, 100, 1, 1]
    assert [t for b in buckets for t in b] == grads  # every tensor once, in order
    big = gradient_buckets([torch.zeros(200_000)], bucket_bytes=400_000)
    assert len(big) == 1  # a tensor larger than a bucket goes alone


def test_metric_models_default_to_the_gpu_and_are_released_after_validation(monkeypatch):
    """Simulated: with CUDA available the face and IQA metrics resolve 'auto' to cuda; release_gpu_metrics forgets
    the cached models built on cuda (the validation's last step) and keeps the CPU ones."""
    from drward.metrics import face_models, metric_utils
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: None)
    assert metric_utils.resolve_device('auto') == 'cuda' and metric_utils.resolve_device('cpu') == 'cpu'
    metric_utils.clear_built_metrics()
    metric_utils.built_once('pyiqa:musiq', {'device': 'cuda'}, object)
    kept = metric_utils.built_once('pyiqa:musiq', {'device': 'cpu'}, object)
    released = metric_utils.release_gpu_metrics()
    assert released == 1
    assert metric_utils.built_once('pyiqa:musiq', {'device': 'cpu'}, lambda: None) is kept
    metric_utils.clear_built_metrics()
    face_models.build_face_models.cache_clear()
