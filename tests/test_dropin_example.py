"""The drop-in example: BasicSR's own SRModel trains on faces with CompositeLoss (L1 + DWTLoss + RewardLoss)."""
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from option_files import load_option_file


def fixed_batch_loss(model, batch):
    with torch.no_grad():
        return float(model.cri_pix(model.net_g(batch['lq']), batch['gt']))


def test_dropin_option_file_trains_and_its_loss_falls(tmp_path):
    opt = load_option_file('dropin_srmodel_tiny.yml', tmp_path)
    torch.manual_seed(0)
    train_set = build_dataset(opt['datasets']['train'])
    loader = build_dataloader(train_set, opt['datasets']['train'], num_gpu=0, dist=False, sampler=None, seed=0)
    val_set = build_dataset(opt['datasets']['val'])  # seeded: the same LQ every time
    fixed = {k: torch.stack([val_set[i][k] for i in range(8)]) for k in ('lq', 'gt')}
    model = build_model(opt)
    assert type(model.cri_pix).__name__ == 'CompositeLoss'
    before = fixed_batch_loss(model, fixed)
    it = 0
    while it < 60:
        for data in loader:
            it += 1
            model.feed_data(data)
            model.optimize_parameters(it)
            if it == 60:
                break
    assert set(model.cri_pix.last_terms) == {'L1Loss', 'DWTLoss', 'RewardLoss'}
    after = fixed_batch_loss(model, fixed)
    assert after < 0.9 * before, (before, after)
