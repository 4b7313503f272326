"""Where a stage's product came from, as a record the stage returns (never a flag to infer it by)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Source = Literal["trained", "resumed", "built", "cache", "checkpoint", "file"]


@dataclass(frozen=True)
class Provenance:
    """``source``: trained or built in this run (``resumed``: trained here from an interrupted
    training's last checkpoint), or read from the cache, a checkpoint or a file
    the user gave; ``path``: the file it lives in (or was read from); ``seconds``: what producing
    it cost in this run, by step (empty when it was only read)."""

    source: Source
    path: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}
