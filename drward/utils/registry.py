"""Registration in BasicSR's registries that never breaks a host project (BasicSR, CodeFormer, GFPGAN, Real-ESRGAN).

BasicSR's ``Registry`` refuses a second object under a taken name: the import that tries raises
``AssertionError: An object named 'X' was already registered``. drward is imported *into* other people's BasicSR
projects, so its names follow two rules:

1. **Never a host's name.** A drward class or function whose Python name is one that BasicSR, CodeFormer's BasicSR
   fork, GFPGAN or Real-ESRGAN register (:data:`HOST_NAMES`) is registered only as ``<name>_drward``
   (BasicSR's own convention for the same problem is ``<name>_basicsr``). Today that is ``LPIPSLoss`` →
   ``LPIPSLoss_drward`` (CodeFormer's fork registers ``LPIPSLoss``). So importing a host before or after drward
   cannot clash, and one option name means the same class in every environment.
2. **Step aside for anyone else.** If another project already registered one of drward's names when drward is
   imported, drward keeps that project's object under the name, registers its own as ``<name>_drward`` and warns
   (``warnings.warn``) which name to write in the option file. Importing drward never raises for a name.

A host that registers one of drward's remaining names *after* importing drward still fails (BasicSR's registry
cannot be told otherwise); import drward after the host's own packages.

Only ``register(obj)`` / ``_do_register(name, obj)``, common to BasicSR 1.3/1.4 and CodeFormer's fork, are used.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, FrozenSet, TypeVar

T = TypeVar('T')
SUFFIX = 'drward'

# Names each host registers, by registry (``Registry._name``): read from XPixelGroup/BasicSR 8d56e3a (= the
# basicsr-fixed 1.4.2 we pin), sczhou/CodeFormer b33cc7d (its basicsr/ fork), TencentARC/GFPGAN 7552a77 (= gfpgan
# 1.3.8) and xinntao/Real-ESRGAN a4abfb2: every ``@*_REGISTRY.register()`` class/function, ``suffix`` applied.
_BASICSR = {
    'arch': ('BasicVSR BasicVSRPlusPlus DFDNet DUF ECBSR EDSR EDVR HiFaceGAN HiFaceGANDiscriminator IconVSR MSRResNet '
             'RCAN RIDNet RRDBNet SRVGGNetCompact_basicsr SpyNet StyleGAN2Discriminator StyleGAN2Generator '
             'StyleGAN2GeneratorBilinear_basicsr SwinIR TOFlow UNetDiscriminatorSN_basicsr VGGFeatureExtractor '
             'VGGStyleDiscriminator'),
    'dataset': ('FFHQDataset PairedImageDataset REDSDataset REDSRecurrentDataset RealESRGANDataset_basicsr '
                'RealESRGANPairedDataset_basicsr SingleImageDataset VideoRecurrentTestDataset VideoTestDUFDataset '
                'VideoTestDataset VideoTestVimeo90KDataset Vimeo90KDataset Vimeo90KRecurrentDataset'),
    'loss': 'CharbonnierLoss GANLoss L1Loss MSELoss MultiScaleGANLoss PerceptualLoss WeightedTVLoss',
    'metric': 'calculate_niqe calculate_psnr calculate_psnr_pt calculate_ssim calculate_ssim_pt',
    'model': ('EDVRModel ESRGANModel HiFaceGANModel RealESRGANModel_basicsr RealESRNetModel_basicsr SRGANModel SRModel '
              'StyleGAN2Model SwinIRModel VideoBaseModel VideoGANModel VideoRecurrentGANModel VideoRecurrentModel'),
}
_CODEFORMER = {
    'arch': 'CodeFormer RRDBNet ResNetArcFace VGGFeatureExtractor VQAutoEncoder VQGANDiscriminator',
    'dataset': 'FFHQBlindDataset FFHQBlindJointDataset PairedImageDataset',
    'loss': 'CharbonnierLoss GANLoss L1Loss LPIPSLoss MSELoss PerceptualLoss WeightedTVLoss',
    'metric': 'calculate_psnr calculate_ssim',
    'model': 'CodeFormerIdxModel CodeFormerJointModel CodeFormerModel SRModel VQGANModel',
}
_GFPGAN = {
    'arch': ('FacialComponentDiscriminator GFPGANBilinear GFPGANv1 GFPGANv1Clean ResNetArcFace '
             'StyleGAN2GeneratorBilinear StyleGAN2GeneratorClean'),
    'dataset': 'FFHQDegradationDataset',
    'model': 'GFPGANModel',
}
_REAL_ESRGAN = {
    'arch': 'SRVGGNetCompact UNetDiscriminatorSN',
    'dataset': 'RealESRGANDataset RealESRGANPairedDataset',
    'model': 'RealESRGANModel RealESRNetModel',
}
HOSTS: Dict[str, Dict[str, str]] = {'BasicSR': _BASICSR, 'CodeFormer': _CODEFORMER, 'GFPGAN': _GFPGAN,
                                    'Real-ESRGAN': _REAL_ESRGAN}
HOST_NAMES: Dict[str, FrozenSet[str]] = {
    kind: frozenset(name for host in HOSTS.values() for name in host.get(kind, '').split())
    for kind in ('arch', 'dataset', 'loss', 'metric', 'model')
}


def drward_name(name: str) -> str:
    """``<name>_drward``: the name drward registers under when ``name`` belongs to someone else."""
    return f'{name}_{SUFFIX}'


def base_name(name: str) -> str:
    """The Python name behind a registered name (``LPIPSLoss_drward`` → ``LPIPSLoss``)."""
    tail = f'_{SUFFIX}'
    return name[:-len(tail)] if name.endswith(tail) else name


def register_object(registry: Any, obj: T) -> str:
    """Register ``obj`` in ``registry`` under the rules above; returns the name it was registered under."""
    name = obj.__name__
    kind = getattr(registry, '_name', '')
    if name in HOST_NAMES.get(kind, frozenset()):
        name = drward_name(name)
    elif name in registry:
        taken_by = registry.get(name)
        name = drward_name(name)
        warnings.warn(f"drward: BasicSR's {kind} registry already holds {obj.__name__!r} "
                      f'({getattr(taken_by, "__module__", "?")}); drward\'s is registered as {name!r}: write '
                      f'`type: {name}` in option files for drward\'s', stacklevel=3)
    registry._do_register(name, obj)
    return name


def register(registry: Any) -> Callable[[T], T]:
    """Decorator form of :func:`register_object` (use instead of ``@REGISTRY.register()``)."""
    def deco(obj: T) -> T:
        register_object(registry, obj)
        return obj
    return deco
