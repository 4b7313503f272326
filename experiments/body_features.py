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

``--terms`` adds a second table: where the run's own prototypes (its ``prototypes.pt``) match.
At every position, the official map's two terms for the position's class, the mean cosine
similarity to the class's class prototypes and the mean to its context prototypes, are each scored
as a ranking of body (and head) positions above off-object ones (ROC AUC, averaged over classes;
the context term negated, since the map subtracts it). A class term that no longer ranks the
bodies says the centres did not form on them; a context term that ranks them says they are
subtracted. The last column ranks the map's heads above its bodies: the map is divided by its
maximum before the threshold, so bodies far below the heads fall under it even where they stand
well above the background. The features are the pool's (scale 1, unflipped), not the map's sum of views.

It prints markdown tables, a row per run, and needs only the run directory (its Hydra config,
checkpoint and, for ``--terms``, prototypes) and the benchmark's data (generated again when missing).
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
    tag for that class (off object, head, body, on object, ignored), the image it comes from, the
    class, and whether the class's CAM puts it in the foreground pool."""

    features: Tensor  # (M, D) float32
    tags: Tensor  # (M,) int8, lpcam.prototypes.pool's tags
    images: Tensor  # (M,) long, the image's index in the split
    foreground: Tensor  # (M,) bool, CAM > τ
    classes: Tensor  # (M,) long, the labelled class the position is tagged for


@torch.no_grad()
def positions(classifier, batches: Iterable[dict], settings) -> Positions:
    """The positions of ``batches`` (the seed-evaluation loader), split as the prototype build splits."""
    from lpcam.prototypes.pool import feature_tags
    from lpcam.stages.prototypes import split_cams

    out: dict[str, list[Tensor]] = {"features": [], "tags": [], "images": [], "foreground": [], "classes": []}
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
        out["classes"].append(cls.repeat_interleave(grid[0] * grid[1]))
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


def map_terms(p: Positions, class_protos: Sequence[Tensor], context_protos: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Per position, the official map's two terms for its class: the mean cosine similarity to the
    class's class prototypes and the mean to its context prototypes (zero where the class has
    none, as the official map then keeps the class term alone)."""
    feats = F.normalize(p.features.float(), dim=1)
    terms = torch.zeros(2, len(feats))
    for c in p.classes.unique().tolist():
        at = p.classes == c
        for i, protos in enumerate((class_protos[c], context_protos[c])):
            if len(protos):
                terms[i, at] = (feats[at] @ F.normalize(protos.float(), dim=1).T).mean(1)
    return terms[0], terms[1]


def term_auc(score: Tensor, p: Positions, part: int, against: int = OFF) -> float:
    """ROC AUC of ``score`` ranking ``part`` positions above ``against`` ones (off-object by
    default), per class and averaged over the classes that have both (classes' terms are not on one
    scale). NaN if none."""
    from sklearn.metrics import roc_auc_score

    aucs = []
    for c in p.classes.unique().tolist():
        keep = (p.classes == c) & ((p.tags == part) | (p.tags == against))
        y = (p.tags[keep] == part).numpy()
        if 0 < y.sum() < len(y):
            aucs.append(roc_auc_score(y, score[keep].numpy()))
    return float(np.mean(aucs)) if aucs else float("nan")


def terms_row(name: str, p: Positions, class_protos: Sequence[Tensor], context_protos: Sequence[Tensor]) -> str:
    fg, bg = map_terms(p, class_protos, context_protos)
    counts = [np.mean([len(t) for t in protos]) for protos in (class_protos, context_protos)]
    aucs = [term_auc(s, p, PARTS[k]) for s in (fg, -bg, fg - bg) for k in ("bodies", "heads")]
    aucs.append(term_auc(fg - bg, p, PARTS["heads"], against=PARTS["bodies"]))
    return f"| {name} | {counts[0]:.1f} | {counts[1]:.1f} | " + " | ".join(f"{a:.3f}" for a in aucs) + " |"


TERMS_HEADER = [
    "| run | class prototypes a class | context a class | class term AUC: bodies | heads "
    "| −context term: bodies | heads | class − context: bodies | heads | heads vs bodies |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


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
    parser.add_argument("--terms", action="store_true", help="also where each run's prototypes match (its prototypes.pt)")
    args = parser.parse_args(argv)
    missing = [run for run in args.runs if args.terms and not (run / "prototypes.pt").is_file()]
    if missing:  # before any run is read: a run takes minutes
        raise SystemExit(f"{', '.join(map(str, missing))}: no prototypes.pt; --terms needs each run's prototypes")
    torch.manual_seed(0)
    lines, terms = list(HEADER), list(TERMS_HEADER)
    for run in args.runs:
        classifier, loader, settings = load_run(run)
        p = positions(classifier, loader, settings)
        lines.append(row(run.name, p))
        print(lines[-1], flush=True)
        if args.terms:
            from lpcam.prototypes.store import Prototypes

            protos = Prototypes.load(run / "prototypes.pt")
            terms.append(terms_row(run.name, p, protos.class_protos, protos.context_protos))
            print(terms[-1], flush=True)
    print("\n".join(lines))
    if args.terms:
        print("\n" + "\n".join(terms))


if __name__ == "__main__":
    main()
