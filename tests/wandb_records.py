"""Reads what an offline W&B run recorded (its ``run-<id>.wandb`` file), for tests.

When to read: W&B writes the file from its service process, which may still buffer it when
``run.finish()`` returns (seen: a 7-byte file just after ``finish()``, the whole run seconds
later). ``wandb.teardown()`` "waits for W&B to finish" (W&B's reference): it shuts the service
down and waits for the process to exit, after which the file is complete; the end of the process
that logged does the same (W&B's atexit hook). So the tests read a run only after one of those.

How: wandb 0.31 ships no Python reader of the file (its ``DataStore`` went with the Python
service), so this reads the format W&B writes: a 7-byte header (``:W&B``, a 2-byte magic, the
version), then 32 KiB blocks of chunks, each with a 7-byte header (the CRC-32 of its type byte and
data, little-endian length, type: full, first, middle, last) holding protobuf ``Record`` messages
(``wandb.proto``, W&B's own schema). Every chunk's checksum and length is checked, and a file that
ends inside a record is refused: a file read too early fails loudly instead of reading as a
shorter run.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7
ZERO, FULL, FIRST, MIDDLE, LAST = 0, 1, 2, 3, 4


class IncompleteRunFile(AssertionError):
    """The file is not a complete W&B run file (read before W&B finished writing it, or damaged)."""


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    if len(data) < HEADER or data[:4] != b":W&B":
        raise IncompleteRunFile(f"{path}: not a W&B run file ({len(data)} bytes)")
    out, pos, pending = [], HEADER, None
    while pos < len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # a block's trailer: zero padding
            if data[pos : pos + left_in_block].strip(b"\0"):
                raise IncompleteRunFile(f"{path}: non-zero block trailer at byte {pos}")
            pos += left_in_block
            continue
        if pos + HEADER > len(data):
            raise IncompleteRunFile(f"{path}: ends inside a chunk header at byte {pos}")
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        if len(chunk) != length or HEADER + length > left_in_block:
            raise IncompleteRunFile(f"{path}: a chunk of {length} bytes at byte {pos} does not fit the file or its block")
        if kind == ZERO and length == 0 and crc == 0:  # padding written ahead of a block's end
            pos += HEADER
            continue
        if zlib.crc32(bytes([kind]) + chunk) != crc:
            raise IncompleteRunFile(f"{path}: checksum mismatch in the chunk at byte {pos}")
        pos += HEADER + length
        if kind in (FULL, FIRST) and pending is not None or kind in (MIDDLE, LAST) and pending is None:
            raise IncompleteRunFile(f"{path}: chunk of type {kind} out of sequence at byte {pos}")
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = None
    if pending is not None:
        raise IncompleteRunFile(f"{path}: ends inside a record")
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
    """The identity, exit code and artifacts of one ``offline-run-*`` folder (read it only after
    ``wandb.teardown()`` or the end of the process that logged it, see above)."""
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
    if run is None or exit_code is None:
        raise IncompleteRunFile(f"{path}: no {'run' if run is None else 'exit'} record (the run did not finish)")
    return OfflineRun(run.run_id, run.run_group, run.job_type, run.display_name, exit_code, artifacts)
