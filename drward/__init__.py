"""drward: DiffusionReward (arXiv 2505.17910) as a BasicSR plugin.

Importing this package registers every arch, loss, dataset, metric and model in BasicSR's registries
(the GFPGAN / Real-ESRGAN convention: registering is importing). Names never clash with a host project's
(:mod:`drward.utils.registry`).
"""
import importlib.util as _util

# BasicSR ≥ 1.4 modules drward builds on; CodeFormer's BasicSR fork ships neither (docs/hosts.md: "Using drward inside
# GFPGAN or CodeFormer" says which two files to copy in).
_NEEDED = ('basicsr.archs.swinir_arch', 'basicsr.data.degradations')
_missing = [name for name in _NEEDED if _util.find_spec(name) is None]
if _missing:
    raise ImportError(f'drward needs BasicSR >= 1.4 modules {_missing}, absent from the installed basicsr '
                      "(CodeFormer's fork lacks them): copy them from BasicSR's master (docs/hosts.md, "
                      '"Using drward inside GFPGAN or CodeFormer")')

from drward import archs, data, losses, metrics, models, weights  # noqa: F401,E402  (import registers)

__version__ = '0.1.0'
