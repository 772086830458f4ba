"""The dynamic FRM update (docs/method.md): the reward model keeps learning that the ground truth beats the generator.

It trains the trainable :class:`~drward.archs.reward.Reward` of the reward loss (the FRM, or a user's trainable
reward) through the interface only: ``preference_logits``, ``trainable_parameters``, ``save_checkpoint`` /
``load_checkpoint``. Without a trainable reward there is nothing to update: ``every`` is 0 and no optimiser exists.

Every ``n`` generator steps (option ``every``, official n = 10), on the batch just restored:

* pairs ``(Î.detach(), I_GT)``, both with the GT's caption, the GT preferred (label 1 = second image);
* ``L = loss_weight · Σ_b CE(softmax([s_Î, s_GT]), GT)`` with ``s_k = exp(logit_scale)·cos(e_Ik, e_T)``
  (:class:`~drward.losses.preference_loss.PreferenceLoss`, official: sum × 0.1);
* its own AdamW (lr 2e-6, betas (0.9, 0.999), eps 1e-8, decoupled weight decay 0.35 on ≥ 2-D weights, none on
  biases, norms and ``logit_scale``: :func:`~drward.models.frm_optim.build_frm_optimizer`), gradient-norm clip 1.0.

One component, used by every model that trains a generator against the FRM (``ReFLModel``, ``RewardSRModel``,
``RewardSRGANModel``). Checkpoints: the FRM goes to ``net_frm_<iter>.pth`` in the official HPS v2 / FRM layout
(``save_frm``); the optimiser is one of the owning model's ``optimizers``, so BasicSR's training state carries it;
on resume, the FRM saved beside the resumed iteration replaces the one built from the options.

Across P processes (``--launcher``) every rank contributes the pairs of its own faces and every rank ends the update
with the same FRM: the FRM starts as rank 0's (broadcast once, here), and after the backward each gradient is
all-reduced (:func:`~drward.utils.distributed.average_gradients`, ×P for the official summed loss:
:func:`~drward.models.frm_optim.global_batch_scale`) before the clip and the AdamW step, which every rank then
computes identically. Why all-reduced gradients and not a DDP-wrapped FRM: DDP keeps its gradient buckets (one
buffer the size of the FRM's unlocked weights: 1.92 GiB for ViT-H-14's, ``benchmarks/memory_budget.py``) allocated for
the whole run, also through the generator's steps, which is when memory peaks; here the FRM's gradients exist only
during the update (``set_to_none``), and the update runs once every ``every`` steps, so DDP's overlap of communication
with the backward would save little. ``shard_optimizer_states`` splits its AdamW states across the ranks.
"""
from __future__ import annotations

import os.path as osp
from contextlib import ExitStack, nullcontext
from typing import Callable, ContextManager, Dict, Mapping, Optional, Sequence

import torch
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger

from drward.archs.reward import Reward
from drward.models.frm_optim import build_frm_optimizer, global_batch_scale, preference_step
from drward.models.model_options import ADAMW
from drward.models.state_offload import StateOffload
from drward.utils.distributed import average_gradients, broadcast_module_
from drward.utils.host_memory import release_host_memory
from drward.utils.option_schema import Bool, Choice, Int, Num, OneOf, Option, resolve

#: The authors' dynamic-update optimiser (their training script).
OFFICIAL_FRM_OPTIM = {'lr': 2e-6, 'betas': (0.9, 0.999), 'eps': 1e-8, 'weight_decay': 0.35}


def parse_every(value, owner: str = 'model') -> int:
    """``frm_update.every`` as an interval: a positive int, or ``0`` / ``'never'`` for no update at all (the
    reward-hacking recipe's first phase, ``options/ablations/refl_diffbir_no_dynamic_frm.yml``)."""
    if isinstance(value, str) and value.strip().lower() == 'never':
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner} train.frm_update.every must be a positive int, 0 or 'never', got {value!r}")
    return value


class DynamicFRMUpdate:
    """Preference steps of the FRM on (restored, GT) pairs, every ``every`` generator iterations.

    Args:
        frm: the trainable reward (``RewardLoss.trained``: the FRM); its trainable parameters are trained in place.
            None: no reward to train (``every`` 0, ``optimizer`` None).
        opt: the ``train.frm_update`` options, declared in :attr:`options` (``every: 0``, ``never`` or
            ``enabled: false``: never; ``offload: true``: the AdamW states live in host memory between updates,
            :mod:`~drward.models.state_offload`; meant for CUDA, where it frees 2 × the unlocked weights of GPU
            memory during the generator steps).
        owner: the model's name, for messages.
        autocast: a context-manager factory the preference step runs under (the owner's mixed precision).
        shard: split the AdamW states across the ranks (``ZeroRedundancyOptimizer``; one process: ignored).
        idle_optimizers: with ``offload``, optimisers (the generator's) whose states go to host memory while the
            update runs.
    """

    #: ``train.frm_update`` (docs/design.md §3): the official values are the defaults.
    options = {
        'enabled': Option(Bool(), True, 'false: no dynamic FRM update (as every: never)'),
        'every': Option(OneOf(Int(1), Choice('never'), bad=0), 10, 'n: one FRM step every n generator steps'),
        'loss_weight': Option(Num(0), 0.1, 'weight of the summed preference cross-entropy'),
        'reduction': Option(Choice('mean', 'sum'), 'sum', "over the batch's pairs (official: sum)"),
        'grad_clip': Option(Num(0, lo_open=True, nullable=True), 1.0, 'gradient-norm clip (~: none)'),
        'optim': Option(ADAMW, None, 'the FRM optimiser; keys not given: OFFICIAL_FRM_OPTIM'),
        'offload': Option(Bool(), False, "the AdamW states in host memory between updates (CUDA)"),
    }

    def __init__(self, frm: Optional[Reward], opt: Optional[Mapping] = None, owner: str = 'model',
                 autocast: Callable[[], ContextManager] = nullcontext, shard: bool = False,
                 idle_optimizers: Sequence[torch.optim.Optimizer] = ()):
        opt = resolve(f'{owner} train.frm_update', self.options, opt, ignore=())
        self.frm, self.owner, self.autocast = frm, owner, autocast
        self.every = parse_every(opt['every'], owner) if opt['enabled'] and frm is not None else 0
        self.grad_clip = opt['grad_clip']
        optim = {**OFFICIAL_FRM_OPTIM, **(opt['optim'] or {})}
        #: what a resumed run compares with the saved run's (:meth:`changes_since`)
        self.settings = {'every': self.every, 'loss_weight': float(opt['loss_weight']),
                         'reduction': str(opt['reduction']),
                         'grad_clip': float(self.grad_clip) if self.grad_clip else 0.0,
                         'lr': float(optim['lr'])}
        self.loss = build_loss({'type': 'PreferenceLoss', 'loss_weight': opt['loss_weight'],
                                'reduction': opt['reduction']})
        self.updates = 0
        self.skipped = 0
        if frm is None:
            self.optimizer, self.offload, self.idle = None, None, []
            return
        broadcast_module_(frm)  # multi-process: every rank starts from rank 0's FRM (before it ever runs)
        self.optimizer = build_frm_optimizer(frm, optim, shard=shard)
        self.offload = StateOffload(self.optimizer, opt['offload'])
        self.idle = [StateOffload(o, self.offload.enabled, resident_on_host=False) for o in idle_optimizers]

    def due(self, current_iter: int) -> bool:
        """True on the iterations that update the FRM (``current_iter % every == 0``; never when ``every`` is 0)."""
        return bool(self.every) and current_iter % self.every == 0

    def step(self, restored: torch.Tensor, gt: torch.Tensor, captions: Sequence[str]) -> Dict[str, float]:
        """One preference step on ``(restored, gt)`` (both (B, 3, H, W) in [0, 1]), the GT preferred.

        Returns ``l_frm``, ``frm_acc`` (pairs the FRM ranked right *before* the step), ``frm_grad_norm`` and the
        running count ``frm_updates``.
        """
        restored = restored.detach().float().clamp(0, 1)
        self.frm.release_compute_cache()  # stale after this step: not held beside the gradients and AdamW states
        labels = torch.ones(restored.shape[0], dtype=torch.long, device=restored.device)
        with ExitStack() as stack:
            for idle in self.idle:
                stack.enter_context(idle.swapped_out())
            stack.enter_context(self.offload.on_device())
            stack.enter_context(self.autocast())
            stats = preference_step(self.frm, self.optimizer, self.loss, restored, gt.detach(), list(captions),
                                    labels, grad_clip=self.grad_clip, after_backward=self._combine_gradients)
        if stats.pop('frm_skipped', 0.0):  # a non-finite loss or gradient: nothing was stepped
            self.skipped += 1
            get_root_logger().warning(f'dynamic FRM update: non-finite step ({stats}); skipped '
                                      f'({self.skipped} skipped so far)')
            stats = {'frm_skipped': float(self.skipped)}
        else:
            self.updates += 1
        release_host_memory()  # the step's freed gradients and activations go back to the system (CPU runs)
        stats['frm_updates'] = float(self.updates)
        return stats

    def _combine_gradients(self) -> None:
        """The global batch's gradient on every rank (nothing in one process)."""
        average_gradients(self.frm.trainable_parameters(), scale=global_batch_scale(self.loss.reduction))

    def changes_since(self, saved: Optional[Mapping]) -> Optional[str]:
        """``'train.frm_update changed: every never → 10'`` when this run's :attr:`settings` differ from ``saved`` (a
        training state's, written by :meth:`settings`); None when equal or unknown (older states hold none).

        A run may be resumed with other FRM-update settings on purpose — the reward-hacking recipe trains with
        ``every: never`` and switches the updates on when resuming (docs/experiments.md) — so a change is reported,
        never refused."""
        if not saved:
            return None
        show = lambda key, value: 'never' if key == 'every' and not value else value
        diffs = [f'{key} {show(key, saved[key])} → {show(key, value)}' for key, value in self.settings.items()
                 if key in saved and saved[key] != value]
        return f'train.frm_update changed: {", ".join(diffs)}' if diffs else None

    def maybe_step(self, current_iter: int, restored: torch.Tensor, gt: torch.Tensor,
                   captions: Sequence[str]) -> Dict[str, float]:
        """:meth:`step` when :meth:`due`, else nothing (an empty dict)."""
        return self.step(restored, gt, captions) if self.due(current_iter) else {}

    # ------------------------------------------------------------------------------------------------ checkpoints
    @staticmethod
    def checkpoint_path(models_dir: str, current_iter) -> str:
        """``<models>/net_frm_<iter>.pth`` (``latest`` for iteration −1, BasicSR's convention)."""
        return osp.join(models_dir, f"net_frm_{'latest' if current_iter == -1 else current_iter}.pth")

    def save(self, path: str) -> None:
        """Write the FRM in the official ``{'state_dict': …}`` layout (loadable as ``RewardLoss``'s
        ``frm.checkpoint``)."""
        if self.frm is not None:
            self.frm.save_checkpoint(path)

    def resume(self, path_opt: Mapping) -> None:
        """On resume (``path.resume_state`` set), load the FRM saved beside the resumed iteration's state."""
        state_path = path_opt.get('resume_state')
        if not state_path or self.frm is None:
            return
        it = osp.splitext(osp.basename(state_path))[0]
        path = self.checkpoint_path(path_opt['models'], it)
        if not osp.exists(path):
            raise FileNotFoundError(f'{self.owner}: resuming from {state_path} but the FRM checkpoint '
                                    f'{path} is missing')
        self.frm.load_checkpoint(path)
        get_root_logger().info(f'{self.owner}: resumed the FRM from {path}')
