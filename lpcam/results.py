"""The ``results.json`` contract and its delivery to loggers.

Schema 2 (docs/results-json.md) is the first schema with names that cannot be
mistaken for the package: every LPCAM method is keyed by its rule (``lpcam_official``,
``lpcam_max``, ...) and ``primary_method`` names the configured one; the prototype settings and
counts moved from ``lpcam`` to ``prototypes``. :func:`upgrade` reads schema-1 files in these terms.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import torch
from pytorch_lightning.loggers import Logger, WandbLogger

from lpcam.atomic import atomic_write

SCHEMA = 2


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and the GPU's peak allocation when there is one)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    if torch.cuda.is_available():
        peak = max(peak, torch.cuda.max_memory_allocated() / 2**20)
    return round(peak, 1)


def write_json(data: dict, path: str | Path) -> Path:
    """Write atomically, so a reader (a sweep report) never sees half a file."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)))


def upgrade(results: dict) -> dict:
    """A results dict in the current schema: schema-1 files (before 0.2) are renamed in place of
    meaning: method ``lpcam`` becomes ``lpcam_<its rule>``, the ``lpcam`` block ``prototypes``."""
    if results.get("schema", 1) >= SCHEMA:
        return results
    old = results["lpcam"]
    rule = old.get("aggregation", "official")
    methods = {(f"lpcam_{rule}" if m == "lpcam" else m): r for m, r in results["methods"].items()}
    settings = ("k", "tau", "mu_fg", "mu_bg", "score")
    return {
        **{k: v for k, v in results.items() if k != "lpcam"},
        "schema": SCHEMA,
        "methods": methods,
        "primary_method": f"lpcam_{rule}",
        "aggregation": rule,
        "prototypes": {
            "settings": {k: old[k] for k in settings if k in old},
            "counts": old.get("prototypes", {}),
            "halo_share": old.get("halo_share", {}),
            "composition": old.get("prototype_parts", {}),
        },
    }


def summary_metrics(results: dict) -> dict[str, float]:
    """Flat scalars for loggers: ``<method>/<best|default>_<metric>``, prototype counts, timings."""
    flat: dict[str, float] = {}
    for method, r in results["methods"].items():
        for which in ("best", "default"):
            for key, value in r[which].items():
                if value is not None:
                    flat[f"{method}/{which}_{key}"] = value
        for part, value in r.get("part_recall", {}).items():
            if value is not None:
                flat[f"{method}/part_recall_{part}"] = value
    counts = results["prototypes"]["counts"].values()
    flat["prototypes/class"] = sum(c["class"] for c in counts)
    flat["prototypes/context"] = sum(c["context"] for c in counts)
    halo = [h for h in results["prototypes"].get("halo_share", {}).values() if h is not None]
    if halo:  # share of the CAM > tau pool lying off the objects, averaged over classes
        flat["prototypes/halo_share"] = sum(halo) / len(halo)
    flat.update({f"time/{k}": v for k, v in results["timings_s"].items()})
    return flat


def log_results(loggers: list[Logger], results: dict, figure: Path | None) -> None:
    """Scalars to every logger; the figure and a per-class IoU table where the logger has them."""
    metrics = summary_metrics(results)
    methods = list(results["methods"])
    classes = list(results["methods"][methods[0]]["per_class_iou"])
    for logger in loggers:
        logger.log_metrics(metrics)
        if isinstance(logger, WandbLogger):
            if figure is not None:
                logger.log_image(key="cams", images=[str(figure)])
            rows = [[c, *(results["methods"][m]["per_class_iou"][c] for m in methods)] for c in classes]
            logger.log_table(key="per_class_iou", columns=["class", *methods], data=rows)
        logger.save()
