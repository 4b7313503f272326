"""The prototypes file: round trip, versioning and refusal of mismatched runs."""

import pytest
import torch

from lpcam.prototypes.store import IncompatiblePrototypes, Prototypes

META = {"backbone": "small_resnet", "layer": "layer3", "dim": 2, "class_names": ["a", "b"], "k": 3}


def make() -> Prototypes:
    return Prototypes([torch.ones(2, 2), torch.zeros(1, 2)], [torch.ones(1, 2), torch.zeros(0, 2)], dict(META))


def test_round_trip_and_counts(tmp_path):
    p = make().save(tmp_path / "p.pt")
    q = Prototypes.load(p)
    assert q.meta == META and torch.equal(q.class_protos[0], torch.ones(2, 2))
    assert q.counts() == {"a": {"class": 2, "context": 1}, "b": {"class": 1, "context": 0}}
    bank, fg, bg = q.bank()
    assert bank.shape == (4, 2) and fg == [slice(0, 2), slice(3, 4)] and bg == [slice(2, 3), slice(4, 4)]
    assert not list(tmp_path.glob("*.tmp"))


def test_check_compatible_names_the_field(tmp_path):
    p = make()
    p.check_compatible("small_resnet", "layer3", 2, ["a", "b"], "x")
    with pytest.raises(IncompatiblePrototypes, match="backbone='small_resnet' but this run has backbone='resnet50'"):
        p.check_compatible("resnet50", "layer3", 2, ["a", "b"], "x")
    with pytest.raises(IncompatiblePrototypes, match="class_names"):
        p.check_compatible("small_resnet", "layer3", 2, ["a", "c"], "x")


def test_other_format_versions_and_missing_files_are_refused(tmp_path):
    d = make().to_dict()
    d["format_version"] = 99
    torch.save(d, tmp_path / "old.pt")
    with pytest.raises(IncompatiblePrototypes, match="format version 99"):
        Prototypes.load(tmp_path / "old.pt")
    with pytest.raises(FileNotFoundError, match="lpcam.prototypes_path"):
        Prototypes.load(tmp_path / "missing.pt")
