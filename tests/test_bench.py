from __future__ import annotations

import pytest

from tests.conftest import experiment_script


@pytest.fixture(scope="module")
def bench():
    yield from experiment_script("bench")


def test_best_of_each_calls_the_methods_in_turn_and_keeps_each_ones_fastest(bench):
    calls: list[str] = []
    clock = iter([0.0, 3.0, 3.0, 4.0, 10.0, 11.0, 11.0, 13.0])  # a: 3 then 1; b: 1 then 2
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    best = bench.best_of_each(fns, repeat=2, clock=lambda: next(clock))
    assert calls == ["a", "b", "a", "b"]
    assert best == {"a": 1.0, "b": 1.0}
