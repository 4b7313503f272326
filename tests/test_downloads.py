"""Downloads against a loopback HTTP server the test starts (127.0.0.1 only): the real code path,
with its URL pointed at the server by the mirror setting users behind a mirror use."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision

from lpcam import downloads
from lpcam.downloads import RemoteFile, fetch, hub_hash_prefix
from lpcam.errors import InputError, MissingInput


class Server:
    """Serves ``files`` (name -> bytes) with Range support; ``cut[name] = n`` sends the file's full
    Content-Length but closes the connection after n bytes, once."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404, "Not Found")
                    return
                data = outer.files[name]
                start = 0
                if (spec := self.headers.get("Range")) and spec.startswith("bytes="):
                    start = int(spec.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in outer.cut:
                    body = body[: outer.cut.pop(name)]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def names(self) -> list[str]:
        return [name for name, _ in self.requests]


@pytest.fixture
def server(monkeypatch) -> Iterator[Server]:
    s = Server()
    s.thread.start()
    monkeypatch.setenv(downloads.MIRROR_ENV, s.url)
    monkeypatch.delenv(downloads.OFFLINE_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def remote(name: str, data: bytes, what: str = "a test file") -> RemoteFile:
    return RemoteFile(f"https://example.org/files/{name}", hashlib.sha256(data).hexdigest(), what)


def test_a_file_is_downloaded_verified_and_then_taken_from_its_place(server, tmp_path):
    data = bytes(range(256)) * 5000
    server.files["weights.bin"] = data
    dest = fetch(remote("weights.bin", data), tmp_path / "cache" / "weights.bin", progress=False)
    assert dest.read_bytes() == data and not (tmp_path / "cache" / "weights.bin.part").exists()
    fetch(remote("weights.bin", data), dest, progress=False)
    assert server.names() == ["weights.bin"]  # the second call found it and asked nothing


def test_a_wrong_checksum_leaves_nothing_under_the_name(server, tmp_path):
    server.files["weights.bin"] = b"not what was promised"
    with pytest.raises(InputError, match=r"a test file: http://127.0.0.1:\d+/mirror/weights.bin gave a file with SHA-256 "):
        fetch(remote("weights.bin", b"the real bytes"), tmp_path / "weights.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_cut_download_is_never_taken_as_complete_and_resumes_where_it_stopped(server, tmp_path):
    data = bytes(range(256)) * 8000
    server.files["big.bin"] = data
    server.cut["big.bin"] = 300_000
    with pytest.raises(MissingInput, match=r"the download of .*big.bin stopped at .*; run again to resume it"):
        fetch(remote("big.bin", data), tmp_path / "big.bin", progress=False)
    assert not (tmp_path / "big.bin").exists()
    assert (tmp_path / "big.bin.part").stat().st_size == 300_000
    fetch(remote("big.bin", data), tmp_path / "big.bin", progress=False)
    assert (tmp_path / "big.bin").read_bytes() == data
    assert server.requests[-1] == ("big.bin", "bytes=300000-")  # only the rest was asked for


def test_http_errors_offline_and_a_full_disk_are_one_line_each(server, tmp_path, monkeypatch):
    with pytest.raises(MissingInput, match=r"a test file: http://127.0.0.1:\d+/mirror/absent.bin: HTTP 404 Not Found"):
        fetch(remote("absent.bin", b""), tmp_path / "absent.bin", progress=False)

    server.files["f.bin"] = b"x" * 10_000
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda path: type("U", (), {"free": 1_000})())
    with pytest.raises(InputError, match=r"a test file: 9.8 KB needed in .*, 1000 B free; make room"):
        fetch(remote("f.bin", b"x" * 10_000), tmp_path / "f.bin", progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    monkeypatch.undo()

    for switch in ("LPCAM_OFFLINE", "HF_HUB_OFFLINE"):
        with monkeypatch.context() as m:
            m.setenv(switch, "1")
            before = len(server.requests)
            with pytest.raises(MissingInput, match=r"downloads are off \(LPCAM_OFFLINE=1 or HF_HUB_OFFLINE=1\); put the file there"):
                fetch(remote("f.bin", b"x"), tmp_path / "f.bin", progress=False)
            assert len(server.requests) == before  # no network call at all


def test_a_file_url_works_as_a_mirror(tmp_path, monkeypatch):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "w.bin").write_bytes(b"weights")
    monkeypatch.setenv(downloads.MIRROR_ENV, (tmp_path / "mirror").as_uri())
    monkeypatch.delenv(downloads.OFFLINE_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert fetch(remote("w.bin", b"weights"), tmp_path / "out" / "w.bin", progress=False).read_bytes() == b"weights"


def test_torch_hub_names_carry_their_hash_prefix():
    assert hub_hash_prefix("resnet50-11ad3fa6.pth") == "11ad3fa6"
    assert hub_hash_prefix("weights.pth") is None


# ------------------------------------------------------------------ torchvision weights


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_pretrained_resnet_weights_are_downloaded_into_the_hub_cache_and_loaded(server, hub, monkeypatch):
    from lpcam.models import backbones

    state = torchvision.models.resnet18(weights=None).state_dict()
    state = {k: torch.full_like(v, 0.25) if v.is_floating_point() else v for k, v in state.items()}
    path = hub.parent / "staging.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"  # a torch hub name: its hash prefix is checked as torch hub does
    server.files[name] = data
    monkeypatch.setattr(backbones, "imagenet_weights", lambda arch, tag="DEFAULT": RemoteFile(
        f"https://download.pytorch.org/models/{name}", hub_hash_prefix(name), f"{arch} ImageNet weights"))  # fmt: skip

    backbone = backbones.torchvision_resnet("resnet18", output_stride=32, pretrained=True)
    assert (hub / name).read_bytes() == data and server.names() == [name]
    assert torch.equal(backbone.body[0].weight, torch.full_like(backbone.body[0].weight, 0.25))
    backbones.torchvision_resnet("resnet18", output_stride=32, pretrained=True)
    assert server.names() == [name]  # the second build reads the cache


def test_torchvision_weights_with_a_wrong_hash_are_refused_and_the_offline_switch_names_the_file(server, hub, monkeypatch):
    from lpcam.models import backbones

    real = backbones.imagenet_weights("resnet18")
    assert real.url == torchvision.models.ResNet18_Weights.DEFAULT.url and real.digest == "f37072fd"
    server.files[real.filename] = b"a truncated or tampered file"
    with pytest.raises(InputError, match=r"resnet18 ImageNet weights: .*resnet18-f37072fd.pth gave a file with SHA-256"):
        backbones.torchvision_resnet("resnet18", pretrained=True)
    assert not hub.exists() or list(hub.iterdir()) == []

    monkeypatch.setenv("LPCAM_OFFLINE", "1")
    with pytest.raises(MissingInput, match=r"resnet18 ImageNet weights: .*hub/checkpoints/resnet18-f37072fd.pth is not there and downloads are off"):
        backbones.torchvision_resnet("resnet18", pretrained=True)


def test_the_suite_cannot_reach_the_network():
    """The conftest's guard: a test that tried would fail here, not pass on a machine that is online."""
    import urllib.request

    with pytest.raises(OSError, match="tests may not reach the network"):
        urllib.request.urlopen("http://192.0.2.1/", timeout=5)  # TEST-NET-1: never routed


def test_which_torchvision_weights_is_a_setting_and_the_paper_recipe_takes_irns():
    from lpcam.models import backbones
    from tests.conftest import compose_config

    assert backbones.imagenet_weights("resnet50", "IMAGENET1K_V1").url == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert backbones.imagenet_weights("resnet50").url == torchvision.models.ResNet50_Weights.DEFAULT.url
    with pytest.raises(InputError, match=r"backbone.pretrained_weights='V3': expected one of \['DEFAULT', 'IMAGENET1K_V1', 'IMAGENET1K_V2'\]"):
        backbones.imagenet_weights("resnet50", "V3")
    assert compose_config(["experiment=voc_resnet50"]).backbone.pretrained_weights == "IMAGENET1K_V1"
