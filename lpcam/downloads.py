"""Files fetched from the network the way torchvision and timm fetch them: verified, resumable, atomic.

:func:`fetch` downloads one URL into a file with a progress bar. What it guarantees:

* **Never half a file under the real name.** Bytes go to ``<name>.part`` and the file appears, by
  an atomic rename, only once its checksum (SHA-256 or MD5, or the prefix torch hub's file names
  carry) matches; a mismatch removes the part file and says which URL gave what.
* **Interrupted downloads resume.** A ``.part`` left by a cut connection or a killed process is
  continued with an HTTP ``Range`` request (or started over where the server does not allow one).
* **Disk space first.** When the server states the size, the free space is checked before a byte
  is written, and the error says how much is needed.
* **An offline switch.** ``LPCAM_OFFLINE=1`` (or Hugging Face's ``HF_HUB_OFFLINE=1``) turns every
  download into a one-line error naming the file to put in place.
* **A mirror.** ``LPCAM_MIRROR=URL`` (``http(s)://`` or ``file://``) fetches each file from
  ``URL/<file name>`` instead of its origin, for machines behind a proxy or a local mirror.

Every failure is one :class:`~lpcam.errors.InputError` line (a missing input is a
:class:`~lpcam.errors.MissingInput`) naming the URL or the file and what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lpcam.errors import InputError, MissingInput

OFFLINE_ENV = "LPCAM_OFFLINE"
MIRROR_ENV = "LPCAM_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 60
_TRUE = {"1", "true", "yes", "on"}
_NAMES = {"sha256": "SHA-256", "md5": "MD5"}
_HUB_HASH = re.compile(r"-([a-f0-9]{6,})\.")  # torch hub's file names: <name>-<sha256 prefix>.<ext>


def offline() -> bool:
    """Whether downloads are switched off (``LPCAM_OFFLINE`` or ``HF_HUB_OFFLINE`` set true)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def source_url(url: str) -> str:
    """``url``, or the same file name under ``$LPCAM_MIRROR`` when a mirror is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + Path(urlparse(url).path).name


def hub_hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix a torch hub file name carries (``resnet50-11ad3fa6.pth``: ``11ad3fa6``)."""
    match = _HUB_HASH.search(filename)
    return match[1] if match else None


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: where from, and what its bytes must hash to (a full digest or a prefix)."""

    url: str
    digest: str  # hex digest, or a prefix of it (torch hub's names carry 8 digits of the SHA-256)
    what: str  # what it is, for messages ("resnet50 ImageNet weights")
    algorithm: str = "sha256"  # sha256 | md5 (the checksums torchvision's dataset classes carry)

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name


def digest_of(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def fetch(remote: RemoteFile, dest: Path, progress: bool = True) -> Path:
    """``dest``, downloaded from ``remote.url`` (or the mirror) unless it is there already.

    A file already at ``dest`` is trusted, as torch hub and Hugging Face trust their caches; one
    written by this function was verified before it got its name."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    url = source_url(remote.url)
    if offline():
        raise MissingInput(
            f"{remote.what}: {dest} is not there and downloads are off ({OFFLINE_ENV}=1 or HF_HUB_OFFLINE=1); "
            f"put the file there (from {remote.url}) or unset the switch"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _download(url, part, remote.what, progress)
    got = digest_of(part, remote.algorithm)
    if not got.startswith(remote.digest.lower()):
        part.unlink()
        raise InputError(
            f"{remote.what}: {url} gave a file with {_NAMES.get(remote.algorithm, remote.algorithm)} {got[:16]}..., "
            f"expected {remote.digest[:16]}...; "
            f"the download was removed; run again, or check {MIRROR_ENV} if it is set"
        )
    os.replace(part, dest)
    return dest


def _download(url: str, part: Path, what: str, progress: bool) -> None:
    """Append ``url``'s bytes to ``part`` (resuming what is there), with a progress bar."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lpcam"})
    if have and urlparse(url).scheme in ("http", "https"):
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file already holds every byte
            return
        raise MissingInput(f"{what}: {url}: HTTP {err.code} {err.reason}; check the URL or {MIRROR_ENV}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise MissingInput(f"{what}: cannot reach {url} ({reason}); check the network, or set {OFFLINE_ENV}=1 "
                           f"and put the file in place") from None  # fmt: skip
    with response:
        resumed = getattr(response, "status", 200) == 206
        if not resumed:
            have = 0  # the server sends the whole file: start over
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if remaining is not None:
            free = shutil.disk_usage(part.parent).free
            if free < remaining:
                raise InputError(
                    f"{what}: {_human(remaining)} needed in {part.parent}, {_human(free)} free; "
                    f"make room or point the cache elsewhere"
                )
        total = have + remaining if remaining is not None else None
        bar = _bar(part.name.removesuffix(".part"), total, have, progress)
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
                out.flush()
                os.fsync(out.fileno())
        except (http.client.IncompleteRead, OSError, TimeoutError) as err:
            raise MissingInput(
                f"{what}: the download of {url} stopped at {_human(part.stat().st_size)} ({type(err).__name__}); "
                f"run again to resume it"
            ) from None
        finally:
            bar.close()
    if total is not None and part.stat().st_size < total:
        raise MissingInput(
            f"{what}: the download of {url} stopped at {_human(part.stat().st_size)} of {_human(total)}; "
            f"run again to resume it"
        )


def _bar(name: str, total: int | None, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"download {name}", disable=not enabled, leave=False)  # fmt: skip
