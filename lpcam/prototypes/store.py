"""The prototypes of one classifier: what LPCAM needs at test time, saved as a versioned file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from lpcam.atomic import torch_save
from lpcam.errors import InputError
from lpcam.safe_load import torch_load

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_KEY = "lpcam_prototypes"  # where a Lightning checkpoint carries its prototypes


class IncompatiblePrototypes(InputError, ValueError):
    """A prototypes file built for another backbone, layer or class set."""


@dataclass
class Prototypes:
    """Per foreground class: class prototypes (P_c, D) and context prototypes (Q_c, D).

    ``meta`` records how they were built (backbone, layer, feature dim, class names, dataset, K, τ,
    μ, …) so that a file given on the command line can be checked against the run that uses it;
    ``stats`` keeps per-class diagnostics (pool sizes, halo share, centre scores).
    ``class_scores``/``context_scores`` hold each prototype's classifier score for its class (the
    score selection used), which score-aware aggregation rules weigh by; 1 when unknown.
    """

    class_protos: list[Tensor]
    context_protos: list[Tensor]
    meta: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    class_scores: list[Tensor] | None = None
    context_scores: list[Tensor] | None = None

    def __post_init__(self) -> None:
        if self.class_scores is None:
            self.class_scores = [torch.ones(len(p)) for p in self.class_protos]
        if self.context_scores is None:
            self.context_scores = [torch.ones(len(p)) for p in self.context_protos]

    def bank(self) -> tuple[Tensor, list[slice], list[slice]]:
        """All prototypes stacked in one (P, D) tensor, with each class's class/context slices."""
        rows, fg, bg, start = [], [], [], 0
        for cp, xp in zip(self.class_protos, self.context_protos):
            rows += [cp, xp]
            fg.append(slice(start, start + len(cp)))
            bg.append(slice(start + len(cp), start + len(cp) + len(xp)))
            start += len(cp) + len(xp)
        return torch.cat(rows), fg, bg

    def bank_scores(self) -> Tensor:
        """(P,) the classifier score of each row of :meth:`bank`, for its own class."""
        return torch.cat([t for pair in zip(self.class_scores, self.context_scores) for t in pair]).float()

    def counts(self) -> dict[str, dict[str, int]]:
        names = self.meta.get("class_names") or [str(i) for i in range(len(self.class_protos))]
        return {
            n: {"class": len(cp), "context": len(xp)}
            for n, cp, xp in zip(names, self.class_protos, self.context_protos)
        }

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "class_protos": [p.cpu() for p in self.class_protos],
            "context_protos": [p.cpu() for p in self.context_protos],
            "class_scores": [s.cpu() for s in self.class_scores],
            "context_scores": [s.cpu() for s in self.context_scores],
            "meta": self.meta,
            "stats": self.stats,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "Prototypes":
        if not isinstance(d, dict) or "format_version" not in d:
            raise IncompatiblePrototypes(
                f"{source}: not a prototypes file (nor a checkpoint carrying prototypes); give the prototypes.pt "
                f"of a run, or drop lpcam.prototypes_path to build them"
            )
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise IncompatiblePrototypes(
                f"{source}: prototypes format version {version}, this lpcam reads {FORMAT_VERSION}; rebuild them"
            )
        problem = _structure_problem(d)
        if problem:
            raise IncompatiblePrototypes(f"{source}: a damaged prototypes file ({problem}); rebuild it")
        return cls(
            d["class_protos"], d["context_protos"], d.get("meta", {}), d.get("stats", {}),
            d.get("class_scores"), d.get("context_scores"),
        )  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file, then rename): an interrupted save leaves no half file."""
        return torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "Prototypes":
        """A prototypes file, or the prototypes a checkpoint carries."""
        d = torch_load(path, "lpcam.prototypes_path")  # tensors and plain containers only: it runs no code
        return (cls.from_checkpoint(d, str(path)) if isinstance(d, dict) else None) or cls.from_dict(d, str(path))

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, source: str) -> "Prototypes | None":
        """The prototypes a loaded checkpoint carries, None when it carries none."""
        return cls.from_dict(checkpoint[CHECKPOINT_KEY], source) if CHECKPOINT_KEY in checkpoint else None

    def into_checkpoint(self, checkpoint: dict) -> dict:
        """Put these prototypes into a checkpoint dict (Lightning's ``on_save_checkpoint`` too)."""
        checkpoint[CHECKPOINT_KEY] = self.to_dict()
        return checkpoint

    def add_to_checkpoint(self, path: str | Path) -> Path:
        """Rewrite the checkpoint file at ``path`` (atomically) so that it carries these prototypes:
        a checkpoint alone is then enough to extract LPCAM later."""
        return torch_save(self.into_checkpoint(torch_load(path, "checkpoint")), path)

    def check_built_by(self, weights: str, source: str) -> None:
        """Refuse prototypes built by another classifier (``weights``: its
        :func:`lpcam.cache.weights_digest`), even of the same architecture: LPCAM's maps compare
        this classifier's features with them, and another classifier's feature space differs.
        A file from before lpcam recorded the digest is accepted with a warning."""
        got = self.meta.get("weights")
        if got is None:
            log.warning(
                "%s: the prototypes do not record which classifier built them (an older file), so they cannot be "
                "checked against this run's classifier; rebuild them if it is not the one that built them", source
            )  # fmt: skip
        elif got != weights:
            raise IncompatiblePrototypes(
                f"{source}: prototypes were built by a classifier with weights {got}, this run's classifier has "
                f"weights {weights} (same architecture, other weights: another seed, training or checkpoint); give "
                f"the checkpoint that built them (ckpt_path=) or drop lpcam.prototypes_path to build them for this one"
            )

    def check_compatible(self, backbone: str, layer: str, dim: int, class_names: Sequence[str], source: str) -> None:
        """Refuse prototypes built for another feature space or class set, naming what differs."""
        expected = {"backbone": backbone, "layer": layer, "dim": dim, "class_names": list(class_names)}
        for key, want in expected.items():
            got = self.meta.get(key)
            if got != want:
                raise IncompatiblePrototypes(
                    f"{source}: prototypes were built with {key}={got!r} but this run has {key}={want!r}; "
                    f"build them for this run (drop lpcam.prototypes_path) or use a matching backbone/dataset"
                )
        sizes = {t.shape[1] for t in self.class_protos + self.context_protos}
        if len(self.class_protos) != len(class_names) or not sizes <= {dim}:
            raise IncompatiblePrototypes(
                f"{source}: a damaged prototypes file: {len(self.class_protos)} classes of feature size "
                f"{sorted(sizes)} against its meta's {len(class_names)} classes of size {dim}; rebuild it"
            )


def _structure_problem(d: dict) -> str | None:
    """What is wrong with a prototypes dict's shapes, None when nothing: per class a (P, D) tensor
    of class and one of context prototypes, all of one D, a score per prototype, a meta dict."""
    protos = [d.get("class_protos"), d.get("context_protos")]
    if not all(isinstance(p, list) and all(isinstance(t, Tensor) and t.ndim == 2 for t in p) for p in protos):
        return "class_protos and context_protos must be lists of 2-D tensors"
    if len(protos[0]) != len(protos[1]):
        return f"{len(protos[0])} classes of class prototypes, {len(protos[1])} of context prototypes"
    if len({t.shape[1] for p in protos for t in p}) > 1:
        return "prototypes of different feature sizes"
    for key, rows in (("class_scores", protos[0]), ("context_scores", protos[1])):
        scores = d.get(key)
        if scores is not None and (
            not isinstance(scores, list) or [getattr(s, "shape", None) for s in scores] != [(len(t),) for t in rows]
        ):
            return f"{key} must hold one score per prototype"
    if not isinstance(d.get("meta", {}), dict) or not isinstance(d.get("stats", {}), dict):
        return "meta and stats must be dicts"
    return None
