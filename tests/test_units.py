"""Unit tests for modules that had none: settings, device, batching, notebook helpers, the cached fine-tune."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from molft_utils.core import device
from molft_utils.core.records import ModelCache
from molft_utils.core.settings import REPO_ROOT, Settings, get_settings, reload_settings
from molft_utils.runs import finetune, notebook
from molft_utils.training.batching import bucketed_batches, sequential_batches
from molft_utils.training.train import TrainConfig

# ---------------------------------------------------------------------------------------------- settings


def test_settings_from_an_environment() -> None:
    s = Settings.from_env({"MOLFT_SMOKE": "Yes", "MOLFT_NUM_THREADS": "3", "MOLFT_CACHE": "/x", "MOLFT_DEVICE": "cpu"})
    assert s == Settings(smoke=True, num_threads=3, cache_dir=Path("/x"), device="cpu")
    assert Settings.from_env({}) == Settings(smoke=False, num_threads=None, cache_dir=REPO_ROOT / "cache")
    with pytest.raises(ValueError, match="MOLFT_NUM_THREADS must be a positive integer, got 'two'"):
        Settings.from_env({"MOLFT_NUM_THREADS": "two"})


def test_settings_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("MOLFT_DEVICE", "cpu" if first.device != "cpu" else "auto")
    assert get_settings() is first
    assert reload_settings().device != first.device


# ------------------------------------------------------------------------------------------------ device


def test_device_choice_and_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("MOLFT_DEVICE", "cpu")
    reload_settings()
    assert device.get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch.cuda.is_available"):
            device.get_device("cuda")
    assert device.autocast_dtype(torch.device("cpu"), "no") is None
    with device.autocast(torch.device("cpu"), None):
        assert not torch.is_autocast_enabled("cpu")


def test_seed_everything_repeats_draws() -> None:
    device.seed_everything(3)
    a = (np.random.rand(), torch.rand(1).item())
    device.seed_everything(3)
    assert (np.random.rand(), torch.rand(1).item()) == a


# ---------------------------------------------------------------------------------------------- batching


def test_bucketed_batches_cover_every_index_once_and_pad_less() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=503)
    batches = bucketed_batches(lengths, 16, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths))) and max(len(b) for b in batches) <= 16
    again = bucketed_batches(lengths, 16, np.random.default_rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(batches, again, strict=True))  # a function of the rng state
    padded = sum(len(b) * lengths[b].max() for b in batches)
    unbucketed = bucketed_batches(lengths, 16, np.random.default_rng(1), bucket_batches=1)
    assert padded < sum(len(b) * lengths[b].max() for b in unbucketed)
    with pytest.raises(ValueError, match="batch_size"):
        bucketed_batches(lengths, 0, rng)


def test_sequential_batches_are_sorted_and_complete() -> None:
    lengths = [5, 1, 4, 2, 3]
    batches = sequential_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 2], [0]]


# -------------------------------------------------------------------------------------- notebook helpers


def test_notebook_setup_reads_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLFT_SMOKE", "1")
    reload_settings()
    before = torch.get_num_threads()
    try:
        ctx = notebook.setup("00_toy", seed=2, out_dir=tmp_path / "run", threads=1)
        assert (ctx.name, ctx.seed, ctx.smoke, ctx.out_dir) == ("00_toy", 2, True, tmp_path / "run")
        assert ctx.out_dir.is_dir() and ctx.device.type in ("cpu", "cuda", "mps")
        assert notebook.setup("00_toy", smoke=False, out_dir=tmp_path / "b", threads=1).smoke is False
    finally:
        torch.set_num_threads(before)


def test_count_progress_outputs() -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="fit: 100%|##########| 3/3 [00:01<00:00]\n")]
    nb.cells = [cell]
    assert notebook.count_progress_outputs(nb) >= 1
    nb.cells = [nbformat.v4.new_code_cell("y")]
    assert notebook.count_progress_outputs(nb) == 0


# -------------------------------------------------------------------------------------- cached fine-tune


@pytest.fixture()
def tiny_backbone_dir(tiny_mlm, tokenizer, tmp_path: Path) -> Path:
    out = tmp_path / "tiny-backbone"
    tiny_mlm.roformer.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def test_finetuned_model_is_cached_by_everything_that_made_it(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    task = finetune.load_task("random", 0, smoke=True)
    cache = ModelCache(tmp_path / "cache")
    cfg = TrainConfig(epochs=1, batch_size=16, patience=1, seed=0, mixed_precision="no")
    first = finetune.finetuned_model(task, "pretrained", tiny_backbone_dir, cfg, cache=cache, progress=False)
    again = finetune.finetuned_model(task, "pretrained", tiny_backbone_dir, cfg, cache=cache, progress=False)
    assert (first.cache_hit, again.cache_hit) == (False, True) and first.path == again.path
    np.testing.assert_allclose(finetune.evaluate(first, task.test)[0], finetune.evaluate(again, task.test)[0])
    other = finetune.finetuned_model(
        task, "pretrained", tiny_backbone_dir, TrainConfig(**{**cfg.__dict__, "seed": 1}), cache=cache, progress=False
    )
    assert not other.cache_hit and other.path != first.path
    # new weights under the same folder name are another backbone
    identity = finetune.backbone_identity(tiny_backbone_dir)
    weights = next(tiny_backbone_dir.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b" ")
    assert finetune.backbone_identity(tiny_backbone_dir) != identity
    with pytest.raises(ValueError, match="init must be"):
        finetune.finetuned_model(task, "nope", tiny_backbone_dir, cfg, cache=cache)


def test_convergence_reports_stopped_early() -> None:
    history = [{"epoch": i, "valid_rmse": v} for i, v in enumerate([1.0, 0.8, 0.9, 0.95, 0.97], start=1)]
    conv = finetune.convergence(history, patience=3)
    assert conv["stopped_early"] is True and conv["best_epoch"] == 2 and conv["converged"] is True
