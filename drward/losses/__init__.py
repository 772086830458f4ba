"""Imports every `*_loss.py` module in this folder so its classes register in BasicSR's registry."""
import importlib
from pathlib import Path

_here = Path(__file__).parent
for _path in sorted(_here.glob('*_loss.py')):
    importlib.import_module(f'{__name__}.{_path.stem}')
