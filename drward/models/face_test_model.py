"""FaceTestModel: restore a face test set with any network, score it, and write the paper's table.

``python tools/test.py -opt options/test_celeba.yml``. ``network_g`` is any registered arch: a drward
:class:`~drward.archs.restorer.Restorer` (``forward(lq)`` returns [0, 1]) or a BasicSR arch (set
``val.output_range: [-1, 1]`` for networks that return [-1, 1]). For every dataset and every row (the restorer, and
in compare mode a second restorer or checkpoint):

1. **restore** each LQ image and save it as PNG under ``path.restored_root/<row>/<dataset>/`` (default
   ``results/restored/<name>/``, outside BasicSR's per-run results folder so reruns find it); an image whose output
   exists is skipped unless the restorer changed (a ``restorer.json`` fingerprint beside the images);
   ``val.face_align.enabled`` restores in-the-wild photos through :class:`~drward.face.wild.WildFaceRestorer`
   (detect → align to FFHQ 512 → restore → paste back);
2. **score** the saved images with ``val.metrics`` (:func:`~drward.metrics.evaluate.evaluate_folder`);
3. **report**: ``<dataset>_results.md`` / ``.csv`` (one row per restorer, plus the relative change per metric in
   compare mode), ``<dataset>_per_image.csv``, the table printed, and LQ | restored | (other row) | GT grids under
   ``visualization/<dataset>/`` when ``val.save_img``. An unreadable input file is skipped and listed in the
   table's notes (:mod:`drward.data.readable_items`).

``val.quantize`` sets how the restorer's float output becomes the saved 8-bit image: ``round`` (default, BasicSR's
``tensor2img``: unbiased) or ``truncate`` (the authors' ``.to(torch.uint8)``, which lowers every pixel by 0.5 DN on
average), applied wherever the network's output is written (and to the face crops of ``face_align``;
:func:`drward.models.test_batches.quantize`).

Compare mode: a ``compare`` block naming the second row (``label``, ``pretrain_network_g``, optionally its own
``network_g``; the rows: :mod:`drward.models.test_rows`). Only one network is in memory at a time.

``val.batch_size`` (default 1): images of one size restored in one network call, each seeded by its place in the set
sorted by path (:mod:`drward.models.test_batches`). ``torchrun ... tools/test.py --launcher pytorch`` (or slurm)
shards every set: image i on rank i mod P, per-image metrics on each rank, gathered; rank 0 computes FID over the
whole folder and writes everything (:mod:`drward.models.test_shards`; docs/evaluation.md).
"""
from __future__ import annotations

import csv
import json
import os
import os.path as osp
from copy import deepcopy
from typing import Any, Dict, List, Mapping, Optional

import cv2
import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from tqdm import tqdm

from drward.archs.restorer import Restorer, load_restorer_weights
from drward.data.readable_items import readable_batches
from drward.diffusion import row_noise
from drward.face.detect import build_face_detector
from drward.face.wild import FACE_ALIGN_OPTIONS, WildFaceRestorer
from drward.metrics.evaluate import (
    ImageScores,
    finish_scores,
    merge_image_scores,
    metric_columns,
    read_bgr,
    score_images,
)
from drward.metrics.report import ResultsTable, side_by_side
from drward.models import test_shards
from drward.models.model_options import METRICS, section
from drward.models.test_batches import QUANTIZE_MODES, Batch, PendingItem, SizeBatches, quantize, write_image
from drward.models.test_rows import COMPARE_OPTIONS, NETWORK_G, RestorerSpec, restorer_rows
from drward.utils.atomic_io import remove_stale_temp_files
from drward.utils.option_schema import REQUIRED, Bool, Choice, Int, Option, Text, group, resolve
from drward.utils.registry import register

IMAGE_EXT = '.png'


@register(MODEL_REGISTRY)
class FaceTestModel(BaseModel):
    """Test-only model: restore (with skip on rerun), score, tabulate; compare mode over two restorers."""

    #: Top-level keys; ``val`` below (docs/design.md §3; a subclass inherits them and adds its own).
    options = {'network_g': Option(NETWORK_G, REQUIRED, 'the restorer, any registered arch'),
               'compare': Option(group(COMPARE_OPTIONS), None, 'a second restorer in the same table')}
    val_options = {
        'label': Option(Text(), None, "the first row's label (default: network_g's type)"),
        'save_img': Option(Bool(), False, 'BasicSR: also write side-by-side grids'),
        'suffix': Option(Text(nullable=True), None, "BasicSR's output-name suffix"),
        'pbar': Option(Bool(), True, 'progress bars'),
        'metrics': Option(METRICS, None, 'metrics by name (BasicSR and drward face metrics)'),
        'skip_existing': Option(Bool(), True, 'a rerun skips the images already restored with the same settings'),
        'output_range': Option(Choice([0, 1], [-1, 1]), [0, 1], "the restorer's output range"),
        'face_align': Option(group(FACE_ALIGN_OPTIONS), None, 'in-the-wild photos'),
        'grids': Option(Int(0), 8, 'how many side-by-side grids per dataset'),
        'seed': Option(Int(0), 0, 'image i is restored with seed + i'),
        'quantize': Option(Choice(*QUANTIZE_MODES), 'round', 'float to 8 bits: round or truncate'),
        'batch_size': Option(Int(1), 1, 'images restored at once'),
    }

    def __init__(self, opt: Dict[str, Any]):
        super().__init__(opt)
        self.val_opt = section(self, 'val', opt.get('val'))
        self.output_range = tuple(self.val_opt['output_range'])
        self.quantize = self.val_opt['quantize']
        self.rows = restorer_rows(opt)
        self.wild = self._build_wild(self.val_opt['face_align'])
        self.net_g, self._active_row = self._build(self.rows[0]), 0
        self.results_tables: Dict[str, ResultsTable] = {}
        self.restore_calls = 0  # network calls, for logs and tests
        self.image_seed = self.val_opt['seed']
        self.image_seeds = [self.image_seed]  # one per image of the batch being restored
        self.batch_size = self.val_opt['batch_size']
        test_shards.wait_group()  # every rank creates the long-timeout group here, at the same point
        self.skipped_inputs: Dict[str, List[str]] = {}  # dataset → unreadable input files, listed in the report

    # ----------------------------------------------------------------------------------------------- building
    def _build_wild(self, given: Optional[Mapping[str, Any]]) -> Optional[WildFaceRestorer]:
        align_opt = resolve('FaceTestModel val.face_align', FACE_ALIGN_OPTIONS, given, ignore=())
        if not align_opt['enabled']:
            return None
        detector = build_face_detector(align_opt['detector'], align_opt['weights_dir'], str(self.device))
        get_root_logger().info(f'FaceTestModel: in-the-wild faces, detector {detector.name}')
        return WildFaceRestorer(detector, align_opt['face_size'], align_opt['upscale'], align_opt['select'],
                                align_opt['min_face'])

    def _build(self, spec: RestorerSpec) -> torch.nn.Module:
        net = build_network(deepcopy(spec.network_opt))
        if spec.pretrain:
            load_restorer_weights(net, spec.pretrain, spec.param_key, spec.strict)
            get_root_logger().info(f'FaceTestModel: {spec.label} loaded {spec.pretrain} [{spec.param_key}]')
        return self.model_to_device(net.eval())

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        """The network on this rank's device, never wrapped in DDP: nothing is trained, every rank restores its
        own share (BasicSR's wrapper asks for ``torch.cuda.current_device()`` and fails on the CPU)."""
        return net.to(self.device)

    def _activate(self, index: int) -> None:
        if self._active_row != index:
            self.net_g = None  # free the other row's network first
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.net_g, self._active_row = self._build(self.rows[index]), index

    # ------------------------------------------------------------------------------------------------ restoring
    def feed_data(self, data: Mapping[str, Any]) -> None:
        self.lq = data['lq'].to(self.device)
        self.gt = data['gt'].to(self.device) if 'gt' in data else None

    def _network(self, lq: torch.Tensor, seeds) -> torch.Tensor:
        """One network call on ``lq`` in [0, 1]; a Restorer samples each image's noise from its own seed (``seeds``:
        one per row, or one int for the whole batch: the faces of one in-the-wild photo)."""
        self.restore_calls += 1
        net = self.get_bare_model(self.net_g)
        with torch.no_grad():
            if isinstance(net, Restorer):
                generator = row_noise.seeded(seeds[0] if not isinstance(seeds, int) and len(seeds) == 1 else seeds)
                out = (net.restore(lq.to(self.device), None, grad_steps=0, generator=generator).image + 1) / 2
            else:
                out = self.net_g(lq.to(self.device))
                out = out[0] if isinstance(out, (tuple, list)) else out
                out = (out + 1) / 2 if self.output_range == (-1, 1) else out
        return out.clamp(0, 1).float().cpu()

    def _restore_faces(self, faces_rgb: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(faces_rgb.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        out = quantize(self._network(batch, self.image_seed), self.quantize)
        size = faces_rgb.shape[1]
        return np.stack([cv2.resize(o, (size, size), interpolation=cv2.INTER_AREA) if o.shape[0] != size else o
                         for o in out])

    def test(self) -> None:
        """Restore ``self.lq`` into ``self.output`` ((B, 3, H, W) in [0, 1]; with ``face_align``, 8-bit values)."""
        if self.wild is None:
            self.output = self._network(self.lq, self.image_seeds)
            return
        pasted = []
        for lq, seed in zip(self.lq, self.image_seeds):
            self.image_seed = seed  # every face of a photo from the photo's seed
            rgb = (lq.permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
            pasted.append(torch.from_numpy(self.wild(rgb, self._restore_faces).image.astype(np.float32) / 255.0))
        self.output = torch.stack(pasted).permute(0, 3, 1, 2)

    def get_current_visuals(self) -> Dict[str, torch.Tensor]:
        visuals = {'lq': self.lq.detach().cpu(), 'result': self.output}
        if self.gt is not None:
            visuals['gt'] = self.gt.detach().cpu()
        return visuals

    def save(self, epoch: int, current_iter: int) -> None:
        """Nothing is trained here."""

    # ----------------------------------------------------------------------------------------------- folders
    def restored_root(self) -> str:
        path_opt = self.opt['path']
        if path_opt.get('restored_root'):
            return path_opt['restored_root']
        results_root = path_opt.get('results_root') or path_opt.get('visualization')
        return osp.join(osp.dirname(results_root), 'restored', self.opt['name'])

    def report_root(self) -> str:
        return self.opt['path'].get('results_root') or self.opt['path']['visualization']

    def _fingerprint_ok(self, folder: str, spec: RestorerSpec) -> bool:
        """True if ``folder`` was restored by this same restorer; (re)writes the fingerprint either way."""
        extra = {'output_range': list(self.output_range), 'face_align': self.val_opt['face_align'],
                 'seed': self.val_opt['seed'], 'quantize': self.quantize}
        wanted = json.loads(json.dumps(spec.fingerprint(extra), sort_keys=True, default=str))
        path = osp.join(folder, 'restorer.json')
        same = osp.exists(path) and json.load(open(path)) == wanted
        os.makedirs(folder, exist_ok=True)
        with open(path, 'w') as handle:
            json.dump(wanted, handle, indent=1, sort_keys=True)
        return same

    # ------------------------------------------------------------------------------------------------ one set
    def _save_inputs(self, data: Mapping[str, Any], names: List[str], inputs_dir: str) -> None:
        for key in ('lq', 'gt'):
            if key not in data:
                continue
            for tensor, name in zip(data[key], names):
                path = osp.join(inputs_dir, key, name + IMAGE_EXT)
                if not osp.exists(path):
                    write_image(tensor2img(tensor, rgb2bgr=False), path)

    def _reuse_saved(self, folder: str, spec: RestorerSpec) -> bool:
        """Whether saved images in ``folder`` may be reused: rank 0 checks and rewrites the fingerprint (and removes
        temporary files a killed run left), every rank gets its answer."""
        same = None
        if test_shards.rank() == 0:
            same = self._fingerprint_ok(folder, spec)
            remove_stale_temp_files(folder)
        return bool(test_shards.from_rank_zero(same)) and self.val_opt['skip_existing']

    def restore_set(self, index: int, dataloader, dataset: str) -> Dict[str, str]:
        """Restore this rank's share of ``dataloader`` (item i on rank i mod P; all of it in one process) with row
        ``index``, ``val.batch_size`` images of one size at a time, skipping saved ones; returns name → path."""
        spec = self.rows[index]
        folder = osp.join(self.restored_root(), spec.slug, dataset)
        inputs_dir = osp.join(self.restored_root(), '_inputs', dataset)
        skip = self._reuse_saved(folder, spec)
        outputs, restored_now, skipped = {}, 0, []
        batches = SizeBatches(self.batch_size)
        positions = test_shards.sorted_positions(dataloader.dataset)  # item i's place in the sorted set
        share = len(range(test_shards.rank(), len(positions), test_shards.world_size()))
        bar = tqdm(total=share, unit='image', desc=f'restore {spec.label} on {dataset}',
                   disable=not self.val_opt['pbar'])
        for item, data in readable_batches(dataloader, skipped, select=lambda i: test_shards.mine(positions[i])):
            names = [osp.splitext(osp.basename(p))[0] for p in data['lq_path']]
            self._save_inputs(data, names, inputs_dir)
            paths = [osp.join(folder, name + IMAGE_EXT) for name in names]
            outputs.update(zip(names, paths))
            bar.update(1)
            if skip and all(osp.exists(p) for p in paths):
                continue
            for batch in batches.add(PendingItem(positions[item], data, paths)):
                restored_now += self._restore_batch(index, batch)
        for batch in batches.rest():
            restored_now += self._restore_batch(index, batch)
        bar.close()
        self.skipped_inputs[dataset] = skipped
        get_root_logger().info(f'FaceTestModel: {spec.label} on {dataset}: restored {restored_now}, '
                               f'reused {len(outputs) - restored_now} saved images in {folder}')
        return outputs

    def _restore_batch(self, index: int, batch: Batch) -> int:
        """Restore one batch with row ``index``, each image seeded by its index in the sorted set; returns the
        count."""
        self._activate(index)
        base = self.val_opt['seed']
        self.image_seeds = [base + i for i in batch.indices]  # same noise for every row, any batch or rank
        self.image_seed = self.image_seeds[0]
        torch.manual_seed(self.image_seed)
        self.feed_data(batch.collated())
        self.test()
        for image, path in zip(quantize(self.output, self.quantize), batch.paths):
            write_image(image, path)
        return len(batch.paths)

    def _input_paths(self, dataset: str, kind: str, names: List[str]) -> Optional[Dict[str, str]]:
        folder = osp.join(self.restored_root(), '_inputs', dataset, kind)
        paths = {name: osp.join(folder, name + IMAGE_EXT) for name in names}
        return paths if all(osp.exists(p) for p in paths.values()) else None

    def _save_grids(self, dataset: str, outputs: List[Dict[str, str]]) -> None:
        names = sorted(outputs[0])[:self.val_opt['grids']]
        lq, gt = self._input_paths(dataset, 'lq', names), self._input_paths(dataset, 'gt', names)
        for name in names:
            panels = ([read_bgr(lq[name])] if lq else []) + [read_bgr(out[name]) for out in outputs]
            labels = (['LQ'] if lq else []) + [row.label for row in self.rows]
            if gt:
                panels, labels = panels + [read_bgr(gt[name])], labels + ['GT']
            imwrite(side_by_side(panels, labels), osp.join(self.opt['path']['visualization'], dataset,
                                                              f'{name}_grid.png'))

    def _write_per_image(self, dataset: str, names: List[str], per_row: Dict[str, Dict[str, List[float]]]) -> None:
        os.makedirs(self.report_root(), exist_ok=True)
        path = osp.join(self.report_root(), f'{dataset}_per_image.csv')
        metrics = list(self.val_opt['metrics'] or {})
        with open(path, 'w', newline='', encoding='utf-8') as handle:
            writer = csv.writer(handle)
            writer.writerow(['method', 'image'] + metrics)
            for label, values in per_row.items():
                for i, name in enumerate(names):
                    writer.writerow([label, name] + [values[m][i] if m in values else '' for m in metrics])

    def score_share(self, dataset: str, outputs: List[Dict[str, str]]) -> List[ImageScores]:
        """The per-image metrics of this rank's share, one :class:`ImageScores` per row."""
        metric_opts = self.val_opt['metrics'] or {}
        names = sorted(outputs[0])
        gt = self._input_paths(dataset, 'gt', names)
        return [score_images(names, restored, gt, metric_opts, self.val_opt['pbar'], spec.label)
                for spec, restored in zip(self.rows, outputs)]

    def evaluate_set(self, dataset: str, outputs: List[Dict[str, str]], image_scores: List[ImageScores],
                     shares: Optional[List[int]] = None) -> ResultsTable:
        """The dataset's table from every row's per-image scores (all shares merged) and the set-level metrics,
        computed here over each row's whole folder (with the relative change in compare mode)."""
        metric_opts = self.val_opt['metrics'] or {}
        names = sorted(outputs[0])
        gt = self._input_paths(dataset, 'gt', names)
        gt_dir = osp.join(self.restored_root(), '_inputs', dataset, 'gt') if gt else None
        table = ResultsTable(dataset, metric_columns(metric_opts))
        per_row = {}
        for spec, restored, share_scores in zip(self.rows, outputs, image_scores):
            folder = osp.join(self.restored_root(), spec.slug, dataset)
            scores = finish_scores(share_scores, names, gt is not None, metric_opts, folder, gt_dir)
            table.add_row(spec.label, scores.means)
            table.notes += [f'{spec.label}: {note}' if len(self.rows) > 1 and 'backend' not in note else note
                            for note in scores.notes if note not in table.notes]
            per_row[spec.label] = scores.per_image
        table.notes.append(f'{len(names)} images; restored images in {osp.dirname(osp.dirname(folder))}')
        note = test_shards.processes_note(shares or [])
        if note:
            table.notes.append(note)
        skipped = self.skipped_inputs.get(dataset) or []
        if skipped:
            table.notes.append(f'skipped {len(skipped)} unreadable input file(s): {"; ".join(skipped)}')
        self._write_per_image(dataset, names, per_row)
        return table

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img: bool) -> None:
        """Restore, score and report one test set; under ``--launcher`` every rank runs this on its share and
        rank 0 alone computes the set-level metrics and writes (:mod:`drward.models.test_shards`)."""
        dataset = dataloader.dataset.opt['name']
        outputs = [self.restore_set(index, dataloader, dataset) for index in range(len(self.rows))]
        share = (outputs, self.score_share(dataset, outputs), self.skipped_inputs.get(dataset) or [])
        shares = test_shards.gather(share)  # also the barrier: every rank's images are written
        outputs = [{k: v for part in shares for k, v in part[0][row].items()} for row in range(len(self.rows))]
        if not outputs[0]:
            raise ValueError(f'FaceTestModel: dataset {dataset} has no images')
        if test_shards.rank() != 0:
            return
        scores = [merge_image_scores([part[1][row] for part in shares]) for row in range(len(self.rows))]
        self.skipped_inputs[dataset] = test_shards.merge_skipped(dataloader.dataset, [part[2] for part in shares])
        counts = [len(part[0][0]) for part in shares]
        table = self.evaluate_set(dataset, outputs, scores, counts)
        paths = table.write(self.report_root())
        if save_img:
            self._save_grids(dataset, outputs)
        self.results_tables[dataset] = table
        text = table.to_markdown()
        print(text, flush=True)
        get_root_logger().info(f'FaceTestModel results ({paths["md"]}, {paths["csv"]}):\n{text}')

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img: bool) -> None:
        """Sharded: item i restored and scored on rank i mod P, the shares gathered, rank 0 reports."""
        self.nondist_validation(dataloader, current_iter, tb_logger, save_img)
