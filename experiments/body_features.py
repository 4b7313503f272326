"""Do a trained classifier's features still tell an object's shared body apart from the background?

    python experiments/body_features.py outputs/regimes/frozen-one_body_192_seed0 \\
        outputs/regimes/finetuned-one_body_192_seed0

LPCAM can cover a part only if (1) the backbone's features set that part apart from the
background, so that a k-means centre can form on it, and (2) the CAM that splits the features puts
the part's positions in the foreground pool. For each finished run (a directory of
``python -m lpcam.run``, as ``experiments/regimes.py`` leaves them) this reads the run's classifier
and measures both on the seed-evaluation images (not the images it was trained on), at every
position of the feature grid, for each class an image is labelled with:

* a linear probe's held-out ROC AUC, body positions against the off-object positions of the same
  images (logistic regression on standardised features, trained on the even-numbered images,
  scored on the odd ones), and the same for the heads as a reference: 0.5 is no separation,
  1 perfect;
* the share of body, head and off-object positions whose CAM exceeds τ, the split
  ``collect_features`` makes (the same CAM, views and τ as the run's prototype build).

It prints one markdown table, a row per run, and needs only the run directory (its Hydra config
and checkpoint) and the benchmark's data (generated again when missing).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PARTS = {"heads": 1, "bodies": 2}  # the part map's values: DISCRIMINATIVE, SHARED (lpcam.prototypes.pool)
OFF = 0  # OFF_OBJECT: a position not on the labelled class's object


@dataclass(frozen=True)
class Positions:
    """Every feature-grid position of every (image, labelled class): its feature, its ground-truth
    tag for that class (off object, head, body, on object, ignored), the image it comes from and
    whether the class's CAM puts it in the foreground pool."""

    features: Tensor  # (M, D) float32
    tags: Tensor  # (M,) int8, lpcam.prototypes.pool's tags
    images: Tensor  # (M,) long, the image's index in the split
    foreground: Tensor  # (M,) bool, CAM > τ


@torch.no_grad()
def positions(classifier, batches: Iterable[dict], settings) -> Positions:
    """The positions of ``batches`` (the seed-evaluation loader), split as the prototype build splits."""
    from lpcam.prototypes.pool import feature_tags
    from lpcam.stages.prototypes import split_cams

    out: dict[str, list[Tensor]] = {"features": [], "tags": [], "images": [], "foreground": []}
    seen = 0
    for batch in batches:
        feats, cams = split_cams(classifier, batch["image"], settings)
        grid = feats.shape[-2:]
        masks = F.interpolate(batch["mask"][:, None].float(), size=grid, mode="nearest")[:, 0].long()
        parts = F.interpolate(batch["parts"][:, None].float(), size=grid, mode="nearest")[:, 0].long()
        pairs = torch.nonzero(batch["label"] > 0)
        image, cls = pairs[:, 0], pairs[:, 1]
        out["features"].append(feats[image].permute(0, 2, 3, 1).flatten(0, 2))
        out["tags"].append(feature_tags(masks[image], parts[image], cls).flatten().to(torch.int8))
        out["images"].append((seen + image).repeat_interleave(grid[0] * grid[1]))
        out["foreground"].append((cams[image, cls] > settings.tau).flatten())
        seen += batch["image"].shape[0]
    return Positions(**{k: torch.cat(v) for k, v in out.items()})


def probe_auc(p: Positions, part: int) -> float:
    """Held-out ROC AUC of a logistic regression telling ``part`` positions from off-object ones:
    trained on the even-numbered images, scored on the odd ones (positions of one image are alike,
    so they never sit on both sides). NaN when either side lacks one of the two kinds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    keep = (p.tags == part) | (p.tags == OFF)
    x, y, even = p.features[keep].numpy(), (p.tags[keep] == part).numpy(), (p.images[keep] % 2 == 0).numpy()
    if any(len(np.unique(y[side])) < 2 for side in (even, ~even)):
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.1))
    probe.fit(x[even], y[even])
    return float(roc_auc_score(y[~even], probe.decision_function(x[~even])))


def foreground_share(p: Positions, tag: int) -> float:
    """Percent of the positions with ``tag`` that the CAM puts in the foreground pool."""
    on = p.tags == tag
    return 100.0 * float(p.foreground[on].float().mean()) if bool(on.any()) else float("nan")


def row(name: str, p: Positions) -> str:
    aucs = [probe_auc(p, PARTS[k]) for k in ("bodies", "heads")]
    shares = [foreground_share(p, t) for t in (PARTS["bodies"], PARTS["heads"], OFF)]
    return f"| {name} | {aucs[0]:.3f} | {aucs[1]:.3f} | {shares[0]:.1f} | {shares[1]:.1f} | {shares[2]:.1f} |"


HEADER = [
    "| run | probe AUC: bodies vs off-object | heads vs off-object | in the foreground pool: bodies % | heads % | off-object % |",
    "|---|---|---|---|---|---|",
]


def load_run(run: Path):
    """The run's classifier, its seed-evaluation loader and prototype settings, from its Hydra config."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lpcam.pipeline import build_settings, prototype_settings
    from lpcam.stages.classifier import load

    config, ckpt = run / ".hydra" / "config.yaml", run / "checkpoints" / "best.ckpt"
    for path in (config, ckpt):
        if not path.is_file():
            raise SystemExit(f"{run}: no {path.relative_to(run)}; expected a finished run of python -m lpcam.run")
    cfg = OmegaConf.load(config)
    cfg.run_dir = str(run)  # Hydra's own interpolation: there is no Hydra app here
    dm = build_settings(cfg.dataset)
    dm.prepare_data()
    classifier = load(ckpt, "checkpoint", dm, instantiate(cfg.backbone), "checkpoint").classifier.eval()
    return classifier, dm.split_dataloader(dm.eval_split), prototype_settings(cfg)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories (each with .hydra/ and checkpoints/)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    lines = list(HEADER)
    for run in args.runs:
        classifier, loader, settings = load_run(run)
        lines.append(row(run.name, positions(classifier, loader, settings)))
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
