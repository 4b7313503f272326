"""Reads what an offline W&B run recorded (its ``run-<id>.wandb`` file), for tests.

The file is a LevelDB-style log of protobuf ``Record`` messages: a 7-byte file header, then 32 KiB
blocks of chunks, each with a 7-byte header (CRC32, little-endian length, type: full, first,
middle, last). wandb no longer ships a Python reader, and these tests must not go online.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


@dataclass
class OfflineRun:
    id: str
    group: str
    job_type: str
    name: str
    exit_code: int | None
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (name, type)


def read_run(run_dir: Path) -> OfflineRun:
    """The identity, exit code and artifacts of one ``offline-run-*`` folder."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    run, exit_code, artifacts = None, None, []
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
        elif kind == "exit":
            exit_code = r.exit.exit_code
        elif kind == "artifact":
            artifacts.append((r.artifact.name, r.artifact.type))
    assert run is not None, f"{path}: no run record"
    return OfflineRun(run.run_id, run.run_group, run.job_type, run.display_name, exit_code, artifacts)
