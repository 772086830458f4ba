"""Load a repo option file the way BasicSR's parse_options would, with every output path under a tmp folder."""
import os
import os.path as osp

import yaml

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))


def load_option_file(name: str, tmp_path, is_train: bool = True) -> dict:
    with open(osp.join(ROOT, 'options', name)) as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=is_train, dist=False, rank=0, world_size=1, auto_resume=False)
    for phase, dataset in opt.get('datasets', {}).items():
        dataset['phase'] = 'train' if phase.startswith('train') else 'val'
        dataset['scale'] = opt.get('scale', 1)
        for key in ('dataroot_gt', 'dataroot_lq'):
            if key in dataset and not osp.isabs(dataset[key]):
                dataset[key] = str(tmp_path / 'datasets' / osp.basename(dataset[key]))
    exp = tmp_path / 'experiments' / opt['name']
    opt['path'].update(experiments_root=str(exp), models=str(exp / 'models'),
                       training_states=str(exp / 'training_states'), log=str(exp),
                       visualization=str(exp / 'visualization'))
    for key in ('models', 'training_states', 'visualization'):
        os.makedirs(opt['path'][key], exist_ok=True)
    return opt
