#!/usr/bin/env python
"""Install drward, the DiffusionReward plugin for BasicSR.

The exact stack (torch 2.14.1 + torchvision 0.29.1, basicsr-fixed, ...) is pinned in ``requirements.txt``;
``tools/run.sh`` installs it into ``.venv/``. ``install_requires`` repeats the pins so that a plain
``pip install -e .`` gets the same working set.
"""
from pathlib import Path

from setuptools import find_packages, setup


def read_requirements(*names: str) -> list:
    lines = [ln for name in names for ln in Path(__file__).with_name(name).read_text().splitlines()]
    reqs = [ln.split('#')[0].strip() for ln in lines]
    return [r for r in reqs if r and r != 'pytest']


setup(
    name='drward',
    version='0.1.0',
    description='DiffusionReward: reward feedback learning (ReFL) for blind face restoration, as a BasicSR plugin',
    long_description=Path(__file__).with_name('README.md').read_text() if Path('README.md').exists() else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['drward', 'drward.*']),
    package_data={'drward': ['assets/*', 'archs/configs/*.json', 'weights/manifest.yml']},
    include_package_data=True,
    python_requires='>=3.10',
    install_requires=read_requirements('requirements.txt'),
    # pyiqa and the dlib face models: `pip install --no-deps -r requirements-nodeps.txt` (see tools/run.sh)
    extras_require={'eval': read_requirements('requirements-nodeps.txt')},
    license='Apache-2.0',
)
