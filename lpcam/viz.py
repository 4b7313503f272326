"""Figures: what a researcher looks at first (image | ground truth | CAM | LPCAM)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lpcam.data.palette import voc_palette  # noqa: E402


def cam_figure(examples: Sequence[dict], methods: Sequence[str], class_names: Sequence[str], path: str | Path) -> Path:
    """One row per example: the image, its ground truth, and for each method the heat map of the
    labelled classes (max over them) over the image, titled with the classes shown."""
    cols = 2 + len(methods)
    fig, axes = plt.subplots(len(examples), cols, figsize=(2.2 * cols, 2.3 * len(examples)), squeeze=False)
    palette = voc_palette()
    for row, ex in zip(axes, examples):
        image = ex["image"].permute(1, 2, 0).numpy()
        mask = ex["mask"].numpy()
        names = ", ".join(class_names[int(k) - 1] for k in ex["keys"])
        row[0].imshow(image)
        row[0].set_title(names, fontsize=8)
        row[1].imshow(palette[mask])
        row[1].set_title("ground truth", fontsize=8)
        for ax, method in zip(row[2:], methods):
            heat = ex[method].amax(0).numpy() if len(ex[method]) else np.zeros(mask.shape)
            ax.imshow(image)
            ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_title(method.upper(), fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
