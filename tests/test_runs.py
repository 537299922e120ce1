"""Tests for molft_utils.core.records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from molft_utils.core.records import (
    ModelCache,
    config_hash,
    environment_info,
    load_results,
    write_json_atomic,
    write_result,
)
from molft_utils.core.settings import reload_settings


@dataclasses.dataclass
class _Cfg:
    lr: float
    out: Path


def test_config_hash_stable_and_sensitive():
    a = {"lr": 1e-4, "layers": 2, "name": "x"}
    h = config_hash(a)
    assert len(h) == 16 and all(c in "0123456789abcdef" for c in h)
    assert config_hash({"name": "x", "layers": 2, "lr": 1e-4}) == h  # key order irrelevant
    assert config_hash({"lr": 2e-4, "layers": 2, "name": "x"}) != h
    assert config_hash({"lr": np.float64(1e-4), "layers": np.int64(2), "name": "x"}) == h
    assert config_hash({"c": _Cfg(0.1, Path("/tmp/a"))}) == config_hash({"c": {"lr": 0.1, "out": "/tmp/a"}})


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json_atomic(path, {"a": np.float32(1.5), "b": float("nan"), "c": np.arange(3), "d": float("inf")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": None, "c": [0, 1, 2], "d": None}
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temp files left


def test_environment_info():
    env = environment_info()
    assert env["packages"]["numpy"] == np.__version__
    assert {"python", "platform", "git_commit", "git_dirty"} <= set(env)


def test_write_and_load_results(tmp_path):
    metrics = {"rf": {"rmse": 1.0, "r2": float("nan")}}
    p = write_result(tmp_path / "nb1" / "seed0", "nb1", 0, {"lr": 1e-3}, metrics, timings={"fit": 2.0})
    write_result(tmp_path / "nb1" / "seed1", "nb1", 1, {"lr": 1e-3}, metrics)
    assert p == tmp_path / "nb1" / "seed0" / "result.json"
    recs = load_results(tmp_path)
    assert [r["seed"] for r in recs] == [0, 1]
    r = recs[0]
    assert r["config_hash"] == config_hash({"lr": 1e-3})
    assert r["metrics"]["rf"] == {"rmse": 1.0, "r2": None}
    assert r["timings"] == {"fit": 2.0} and r["extra"] == {}
    assert {"notebook", "config", "environment", "created"} <= set(r)
    assert r["created"].endswith("+00:00")


def test_cache_miss_build_hit(tmp_path):
    cache = ModelCache(tmp_path)
    key = {"code_version": "v1", "lr": 1e-4}
    calls = []

    def build(d: Path) -> None:
        calls.append(d)
        (d / "weights.txt").write_text("w")

    assert not cache.has("ft", key)
    p1 = cache.get_or_create("ft", key, build)
    assert cache.has("ft", key) and p1 == cache.path_for("ft", key) == tmp_path / "ft" / config_hash(key)
    assert (p1 / "weights.txt").read_text() == "w"
    assert json.loads((p1 / "key.json").read_text()) == key
    p2 = cache.get_or_create("ft", key, build)
    assert p2 == p1 and len(calls) == 1
    cache.get_or_create("ft", {**key, "code_version": "v2"}, build)
    assert len(calls) == 2


def test_cache_failed_build_leaves_nothing(tmp_path):
    cache = ModelCache(tmp_path)
    key = {"code_version": "v1"}

    def bad(d: Path) -> None:
        (d / "partial").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get_or_create("ft", key, bad)
    assert not cache.has("ft", key)
    assert list((tmp_path / "ft").iterdir()) == []


def test_cache_key_mismatch_and_code_version(tmp_path, monkeypatch):
    cache = ModelCache(tmp_path)
    key = {"code_version": "v1", "x": 1}
    p = cache.get_or_create("ft", key, lambda d: None)
    (p / "key.json").write_text(json.dumps({"code_version": "v1", "x": 2}))
    with pytest.raises(RuntimeError, match="mismatch"):
        cache.get_or_create("ft", key, lambda d: None)
    with pytest.raises(ValueError, match="code_version"):
        cache.path_for("ft", {"x": 1})
    monkeypatch.setenv("MOLFT_CACHE", str(tmp_path / "env"))
    assert ModelCache().root != tmp_path / "env"  # the environment is read once ...
    reload_settings()
    assert ModelCache().root == tmp_path / "env"  # ... and again on request
