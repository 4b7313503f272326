"""The export stage: a CAM method's maps for every image of a split, as files the WSSS pipelines read.

``stage=export export.dir=DIR export.formats=[irn,png]`` writes, per image, one file per format,
each format into its own subfolder (``DIR/irn/<id>.npy``, ``DIR/png/<id>.png``: see
:mod:`lpcam.export.formats`). It is resumable: every file is written under a temporary name and
renamed, so a file that exists is complete, and a rerun skips the images whose files all exist.
``DIR/export.json`` records what the files are (method, its settings, the digests of the
classifier and the prototypes); a rerun with anything else into the same folder is refused.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor

from lpcam.cache import tensors_digest, weights_digest
from lpcam.cams.base import CamMethod
from lpcam.cams.multiscale import uint8_pixels
from lpcam.errors import InputError, MissingInput
from lpcam.export.formats import FORMATS, ImageMaps, crf_available, make_format, read_irn, strided_size
from lpcam.metrics.segmentation import SeedConfusion
from lpcam.models.classifier import Classifier
from lpcam.prototypes.store import Prototypes
from lpcam.results import write_json
from lpcam.stages.evaluation import EvaluationSettings, feature_batch

log = logging.getLogger(__name__)

MANIFEST = "export.json"
LAYOUT_SCHEMA = 2  # export.json's schema: 2 = a subfolder per format; 1 (earlier lpcam) = every file in DIR


@dataclass(frozen=True)
class ExportSettings:
    """What ``stage=export`` writes (the ``export`` config group, built by Hydra)."""

    dir: str | None = None  # where the files go (required for stage=export)
    formats: tuple[str, ...] = ("irn",)  # irn, npz, png, mctformer, ir_label: each into its own subfolder, DIR/<format>/
    split: str | None = None  # default: the training split, as the official code's LPCAM step
    method: str | None = None  # default: the configured LPCAM rule (results key, e.g. lpcam_max, cam)
    threshold: float | None = None  # png seeds: default the evaluation's best threshold, else its default
    fg_threshold: float = 0.30  # ir_label: IRN's conf_fg_thres (official LPCAM: 0.45)
    bg_threshold: float = 0.05  # ir_label: IRN's conf_bg_thres (official LPCAM: 0.25)
    crf: bool = False  # ir_label: dense-CRF refinement as IRN's (needs pydensecrf); never chosen by what is installed

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(self.formats))
        ir_label_crf = not self.crf or "ir_label" not in self.formats or crf_available()
        checks = [
            ("formats", len(self.formats) > 0 and set(self.formats) <= set(FORMATS), f"formats among {sorted(FORMATS)}"),
            ("threshold", self.threshold is None or 0 < self.threshold < 1, "a background threshold in (0, 1)"),
            ("fg_threshold", 0 < self.fg_threshold < 1, "a threshold in (0, 1)"),
            ("bg_threshold", 0 < self.bg_threshold <= self.fg_threshold, "a threshold in (0, export.fg_threshold]"),
            ("crf", ir_label_crf, "false: the dense CRF needs pydensecrf, which is not installed (pip install 'lpcam[crf]')"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"export.{name}={getattr(self, name)!r}: expected {expected}")

    def writers(self, threshold: float) -> list:
        options = {
            "png": {"threshold": threshold},
            "ir_label": {"fg_threshold": self.fg_threshold, "bg_threshold": self.bg_threshold, "crf": self.crf},
        }
        return [make_format(name, **options.get(name, {})) for name in self.formats]


def prototypes_digest(prototypes: Prototypes) -> str:
    """Identifies a prototype set bit for bit, as :func:`weights_digest` a classifier."""
    return tensors_digest(
        [(f"class/{c}", p) for c, p in enumerate(prototypes.class_protos)]
        + [(f"context/{c}", p) for c, p in enumerate(prototypes.context_protos)]
    )


def claim(directory: Path, identity: dict[str, Any], formats: tuple[str, ...]) -> None:
    """Write (or check) ``DIR/export.json``: files of another method, settings, classifier or
    prototypes are never mixed into one folder."""
    recorded = check_claim(directory, identity)
    if recorded is not None:
        formats = tuple(dict.fromkeys([*recorded.get("formats", []), *formats]))
    write_json({**identity, "formats": list(formats)}, directory / MANIFEST)


def check_claim(directory: Path, identity: dict[str, Any]) -> dict | None:
    """Refuse a ``DIR/export.json`` that disagrees with ``identity`` (all of it, or the part known
    before training: :func:`settings_identity`); returns the manifest, None when there is none."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text())
    if recorded.get("schema") != identity.get("schema", recorded.get("schema")):
        raise InputError(
            f"export.dir={directory}: written by an earlier lpcam, with every format in this one folder (each "
            f"format now has a subfolder); export into another folder (stage=score still reads this one)"
        )
    differing = [k for k in identity if recorded.get(k) != identity[k]]
    if differing:
        k = differing[0]
        raise InputError(
            f"export.dir={directory}: it holds an export with {k}={recorded.get(k)!r}, this run has "
            f"{k}={identity[k]!r}; export into another folder (or delete that one) rather than mix them"
        )
    return recorded


class CamExporter(pl.LightningModule):
    """``trainer.predict`` over a split: per image, the method's maps at full and at stride-4
    resolution (IRN's ``high_res`` and ``cam``), written in every format; images whose files all
    exist are skipped. Under DDP each rank writes the images of its shard."""

    def __init__(
        self,
        classifier: Classifier,
        method: CamMethod,
        ids: list[str],
        writers: list,
        directory: Path,
        views: EvaluationSettings,
    ) -> None:
        super().__init__()
        self.classifier, self.method, self.ids, self.writers = classifier, method, ids, writers
        self.directory, self.views = directory, views
        self.written = self.skipped = 0
        self.seconds = 0.0

    def done(self, image_id: str) -> bool:
        return all(w.path(self.directory, image_id).is_file() for w in self.writers)

    def predict_step(self, batch: dict, batch_idx: int) -> int:
        """Writes the batch's missing files; returns how many images it wrote."""
        if self.trainer.received_sigterm:  # Lightning's prediction loop does not stop on SIGTERM itself
            raise SIGTERMException
        t0 = time.perf_counter()
        ids = [self.ids[int(i)] for i in batch["index"]]
        todo = [b for b, image_id in enumerate(ids) if not self.done(image_id)]
        self.skipped += len(ids) - len(todo)
        if todo:
            images, labels = batch["image"][todo], batch["label"][todo]
            context = feature_batch(self.classifier, images, labels, self.views)
            h, w = context.size
            with torch.no_grad():
                high_res = self.method.maps(context)
                stride4 = self.method.maps(context, strided_size(h, w))  # IRN's cam: ceil(H/4) x ceil(W/4)
            for j, b in enumerate(todo):
                keys = torch.nonzero(labels[j]).flatten()
                maps = ImageMaps(
                    image_id=ids[b],
                    keys=keys.cpu().numpy().astype(np.int64),
                    high_res=high_res[j, keys].float().cpu().numpy(),
                    stride4=stride4[j, keys].float().cpu().numpy(),
                    image=uint8_pixels(images[j]) if any(wr.needs_image for wr in self.writers) else None,
                )
                for writer in self.writers:
                    writer.write(self.directory, maps)
            self.written += len(todo)
        self.seconds += time.perf_counter() - t0
        return len(todo)


def export_identity(
    method: str, settings: ExportSettings, split: str, dataset: str, classifier: Classifier, prototypes: Prototypes,
    views: EvaluationSettings, threshold: float,
) -> dict[str, Any]:  # fmt: skip
    """What makes two exports' files interchangeable (the manifest's fields, formats aside)."""
    return {
        **settings_identity(method, settings, split, dataset, views),
        "png_threshold": threshold,
        "classifier": weights_digest(classifier),
        "prototypes": prototypes_digest(prototypes),
        # the classifier's digest is a field of its own (and was not in the meta of earlier files)
        "prototype_settings": {k: v for k, v in prototypes.meta.items() if k not in ("class_names", "weights")},
    }


def settings_identity(method: str, settings: ExportSettings, split: str, dataset: str, views: EvaluationSettings) -> dict[str, Any]:
    """The part of :func:`export_identity` known before any training: checked at once."""
    not_identity = ("dir", "formats", "threshold", "split", "method")  # the folder itself, or resolved here
    options = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in not_identity}
    return {"schema": LAYOUT_SCHEMA, "dataset": dataset, "split": split, "method": method, "scales": list(views.scales), "flip": views.flip,
            "rescale": views.rescale, "upsample": views.upsample, **options}  # fmt: skip



def read_manifest(directory: Path) -> dict:
    """``DIR/export.json``, or an error saying the folder is no export."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise MissingInput(f"export.dir={directory}: no {MANIFEST}, so not a folder lpcam exported into")
    return json.loads(path.read_text())


def irn_folder(directory: Path, manifest: dict) -> Path:
    """Where an export's ``irn`` files are: ``DIR/irn``, or ``DIR`` itself in an export written
    before the formats had a folder each (``export.json`` schema 1)."""
    return Path(directory) if manifest.get("schema") == 1 else FORMATS["irn"]().folder(Path(directory))


def score_export(folder: Path, dataset, class_names: list[str], thresholds, default_threshold: float) -> dict:
    """Seed metrics of the ``irn`` files in ``folder`` against the ground truth, by the same seed
    evaluation as the in-memory one (:class:`~lpcam.metrics.segmentation.SeedConfusion`): the
    round trip that shows the files hold the evaluated maps."""
    confusion = SeedConfusion(len(class_names) + 1, thresholds)
    for i, image_id in enumerate(dataset.ids):
        item = dataset[i]
        try:
            keys, high_res = read_irn(Path(folder), str(image_id))
        except FileNotFoundError as err:
            raise MissingInput(
                f"{err.filename}: no exported maps for image {image_id} of split {dataset.split}; "
                f"export that split (export.split={dataset.split})"
            ) from None
        confusion.update(torch.as_tensor(high_res), torch.as_tensor(keys) + 1, item["mask"], item["parts"])
    return confusion.results(["background", *class_names], default_threshold)
