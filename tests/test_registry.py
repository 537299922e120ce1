"""The registries: a new PEFT method, selection strategy or robust method is one registration."""

from __future__ import annotations

import numpy as np
import pytest

from molft_utils.core.registry import Registry, UnknownNameError


def test_registry_order_lookup_and_errors() -> None:
    reg: Registry[int] = Registry("number")
    reg.register("one", 1)

    @reg.register("two")
    def two() -> int:
        return 2

    assert reg.names() == ("one", "two") and reg["two"]() == 2 and "one" in reg and len(reg) == 2
    assert reg.get("three") is None  # a Mapping: get() works
    with pytest.raises(ValueError, match=r"unknown number 'three'; choose one of \('one', 'two'\)"):
        reg["three"]
    with pytest.raises(UnknownNameError):
        reg.check("three")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("one", 11)
    assert reg["one"] == 1


def test_a_new_selection_strategy_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    from molft_utils.methods import selection

    reg = Registry("selection strategy")
    for name, entry in selection.SELECTORS.items():
        reg.register(name, entry)
    monkeypatch.setattr(selection, "SELECTORS", reg)

    def lowest(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
        return np.argsort(labels, kind="stable")[:n]

    reg.register("lowest", selection.Selector(lowest, "labels"))
    assert selection.select("lowest", 2, labels=[3.0, 1.0, 2.0]).tolist() == [1, 2]
    with pytest.raises(ValueError, match="needs labels"):
        selection.select("lowest", 2, smiles=["C"])
    with pytest.raises(ValueError, match="unknown selection strategy 'nope'"):
        selection.select("nope", 2, labels=[1.0])


def test_robust_registries_describe_every_method() -> None:
    from molft_utils.methods import robust

    assert robust.TRAINED_METHODS == ("Full FT", "LP", "Surgical", "LP-FT", "Feature-map", "BSS", "L2-SP")
    assert robust.POST_HOC_METHODS == ("WiSE-FT", "Uniform soup", "Greedy soup", "RoFt-Mol")
    assert robust.REGULARISED == {"Feature-map": "delta", "BSS": "delta", "L2-SP": "alpha"}
    assert set(robust.MECHANISM) == {*robust.TRAINED, *robust.POST_HOC}
    assert {robust.MECHANISM[m] for m in robust.MECHANISM} == {"reference", "partial", "representation", "weight"}
