"""drward: DiffusionReward (arXiv 2505.17910) as a BasicSR plugin.

Importing this package registers every arch, loss, dataset, metric and model in BasicSR's registries
(the GFPGAN / Real-ESRGAN convention: registering is importing).
"""
from drward import archs, data, losses, metrics, models  # noqa: F401  (import registers)

__version__ = '0.1.0'
