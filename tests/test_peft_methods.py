"""Tests of molft_utils.methods.peft_methods on tiny encoders (RoFormer and a fake MoLFormer-named tree)."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch
from conftest import TINY_SMILES
from peft import PeftModel
from torch import nn
from transformers import PretrainedConfig, RoFormerModel
from transformers.modeling_outputs import BaseModelOutput

from molft_utils.methods.peft_methods import (
    METHODS,
    AdaLoraSettings,
    LoraSettings,
    NoTargetModulesError,
    attention_targets,
    feedforward_targets,
    inference_seconds,
    merge_and_save,
    peak_memory,
    prepare,
)
from molft_utils.models.backbone import RegressionModel
from molft_utils.pretraining.pretrain import backbone_config
from molft_utils.training.train import TrainConfig, fit

torch.set_num_threads(1)

SMILES = TINY_SMILES + ["CCCCO", "c1ccncc1", "CC(C)O", "OCC(O)CO", "Clc1ccccc1", "CC#N"]
LABELS = [float(i % 5) - 1.0 + 0.1 * i for i in range(len(SMILES))]


# --- a fake MoLFormer-XL tree: MoLFormer's module names, plain attention ------------------------


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.feature_map = nn.Identity()  # MoLFormer's linear-attention feature map (no Linear inside)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :].bool())
        return out.transpose(1, 2).reshape(b, t, h)


class _DenseNorm(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden, heads)
        self.output = _DenseNorm(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inter: int) -> None:
        super().__init__()
        self.attention = _Attention(hidden, heads)
        self.intermediate = _Intermediate(hidden, inter)
        self.output = _DenseNorm(inter, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, inter: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(hidden, heads, inter) for _ in range(layers))


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(hidden)


class FakeMolformer(nn.Module):
    """Module names as in MoLFormer-XL (``encoder.layer.{i}.attention.self.query``, ...)."""

    def __init__(self, vocab: int, layers: int = 2, hidden: int = 32, heads: int = 2, inter: int = 64) -> None:
        super().__init__()
        self.config = PretrainedConfig(hidden_size=hidden)
        self.embeddings = _Embeddings(vocab, hidden)
        self.encoder = _Encoder(layers, hidden, heads, inter)
        self.LayerNorm = nn.LayerNorm(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: object) -> BaseModelOutput:
        x = self.embeddings.LayerNorm(self.embeddings.word_embeddings(input_ids))
        for layer in self.encoder.layer:
            x = layer(x, attention_mask)
        return BaseModelOutput(last_hidden_state=self.LayerNorm(x))


# --- helpers ------------------------------------------------------------------------------------


def _tiny_roformer(tokenizer, layers: int = 1, hidden: int = 32, intermediate: int = 64) -> RoFormerModel:
    torch.manual_seed(0)
    config = backbone_config(len(tokenizer), layers=layers, hidden=hidden, heads=2, intermediate=intermediate)
    return RoFormerModel(config)


def _fake_molformer(tokenizer) -> FakeMolformer:
    torch.manual_seed(0)
    return FakeMolformer(len(tokenizer))


def _expected_rule(method: str):
    """Name predicate for the backbone parameters that must train."""
    return {
        "full": lambda n: True,
        "bitfit": lambda n: n.endswith("bias"),
        "lora": lambda n: ".lora_A." in n or ".lora_B." in n,
        "dora": lambda n: ".lora_A." in n or ".lora_B." in n or ".lora_magnitude_vector." in n,
        "adalora": lambda n: any(f".lora_{k}." in n for k in "ABE"),
        "ia3": lambda n: ".ia3_l." in n,
    }[method]


def _batch(tokenizer, smiles):
    enc = tokenizer(list(smiles), padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


# --- target modules by role ---------------------------------------------------------------------


def test_targets_on_roformer(tiny_mlm):
    enc = tiny_mlm.roformer
    modules = dict(enc.named_modules())
    att = attention_targets(enc)
    assert att == [f"encoder.layer.0.attention.self.{r}" for r in ("query", "key", "value")]
    assert attention_targets(enc, ("key", "value")) == att[1:]
    assert feedforward_targets(enc, "up") == ["encoder.layer.0.intermediate.dense"]
    assert feedforward_targets(enc, "down") == ["encoder.layer.0.output.dense"]
    both = feedforward_targets(enc)
    assert both == ["encoder.layer.0.intermediate.dense", "encoder.layer.0.output.dense"]
    assert all(isinstance(modules[n], nn.Linear) for n in att + both)
    assert not any("attention" in n for n in both)
    # the down-projection maps intermediate -> hidden
    assert modules[both[1]].in_features == enc.config.intermediate_size


def test_targets_on_fake_molformer(tokenizer):
    enc = _fake_molformer(tokenizer)
    modules = dict(enc.named_modules())
    att = attention_targets(enc)
    assert len(att) == 6
    assert att[:3] == [f"encoder.layer.0.attention.self.{r}" for r in ("query", "key", "value")]
    down = feedforward_targets(enc, "down")
    assert down == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    assert "encoder.layer.0.attention.output.dense" not in feedforward_targets(enc)
    assert all(isinstance(modules[n], nn.Linear) for n in att + down)


def test_no_targets_raise():
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(NoTargetModulesError, match="self-attention"):
        attention_targets(plain)
    with pytest.raises(NoTargetModulesError, match="feed-forward"):
        feedforward_targets(plain)
    with pytest.raises(ValueError, match="roles"):
        attention_targets(plain, ("queries",))


def test_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="unknown"):
        prepare(RegressionModel(_tiny_roformer(tokenizer)), "prefix")
    with pytest.raises(ValueError, match="total_steps"):
        prepare(RegressionModel(_tiny_roformer(tokenizer)), "adalora")
    with pytest.raises(TypeError):
        prepare(RegressionModel(_tiny_roformer(tokenizer)), "ia3", LoraSettings())


# --- prepare --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["roformer", "molformer"])
@pytest.mark.parametrize("method", METHODS)
def test_prepare_selects_expected_parameters(tokenizer, method, kind):
    backbone = _tiny_roformer(tokenizer) if kind == "roformer" else _fake_molformer(tokenizer)
    setup = prepare(RegressionModel(backbone), method, total_steps=10)
    model = setup.model
    assert isinstance(model.backbone, PeftModel) == (method in ("lora", "dora", "ia3", "adalora"))
    chosen = dict(setup.hooks.trainable(model))
    head = {n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert head and head <= set(chosen)  # the head always trains
    rule = _expected_rule(method)
    expected = {n for n, _ in model.named_parameters() if n.startswith("backbone.") and rule(n)}
    assert {n for n in chosen if not n.startswith("head.")} == expected
    assert expected  # something in the backbone trains
    assert setup.n_trainable == sum(p.numel() for p in chosen.values())
    assert setup.n_total == sum(p.numel() for p in model.parameters())
    assert setup.n_trainable_backbone == setup.n_trainable - sum(p.numel() for n, p in chosen.items() if n in head)
    assert math.isclose(setup.percent_trainable, 100 * setup.n_trainable / setup.n_total)
    if method == "full":
        assert setup.n_trainable == setup.n_total
    else:
        assert setup.n_trainable < setup.n_total
    # requires_grad mirrors the selection
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(chosen)
    if method == "ia3":
        cfg = model.backbone.peft_config["default"]
        assert set(cfg.feedforward_modules) == {n for n in setup.target_modules if n.endswith("output.dense")}
        assert not any("attention.output" in n or n.endswith("query") for n in setup.target_modules)
    # the prepared model still runs
    model.eval()
    with torch.no_grad():
        out = model(**_batch(tokenizer, SMILES[:3]))
    assert out.shape == (3,) and torch.isfinite(out).all()


def test_trainable_share_ordering(tokenizer):
    shares = {}
    for method in METHODS:
        backbone = _tiny_roformer(tokenizer, layers=2, hidden=128, intermediate=512)
        setup = prepare(RegressionModel(backbone), method, total_steps=100)
        shares[method] = setup.n_trainable_backbone / setup.n_total
    assert shares["full"] > shares["lora"] > shares["bitfit"] > 0
    assert shares["lora"] > shares["ia3"] > 0
    assert shares["dora"] > shares["lora"]  # DoRA adds a magnitude vector per adapted layer


# --- training -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_fit_changes_only_trainable_parameters(tokenizer, method):
    epochs, batch_size = 2, 4
    total = epochs * -(-len(SMILES) // batch_size)
    settings = AdaLoraSettings(init_r=4, target_r=2, delta_t=1) if method == "adalora" else None
    setup = prepare(RegressionModel(_tiny_roformer(tokenizer)), method, settings, total_steps=total)
    model = setup.model
    trainable = {n for n, _ in setup.hooks.trainable(model)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr_backbone=1e-2, lr_head=1e-2, patience=5,
        mixed_precision="no", warmup_fraction=0.0,
    )  # fmt: skip
    res = fit(model, tokenizer, SMILES, LABELS, SMILES, LABELS, cfg, setup.hooks, torch.device("cpu"), progress=False)
    assert res.n_trainable == setup.n_trainable
    assert np.isfinite(res.best_valid_rmse)
    after = dict(model.named_parameters())
    frozen = set(before) - trainable
    assert frozen or method == "full"
    assert all(torch.equal(before[n], after[n].detach()) for n in frozen)
    changed = {n for n in trainable if not torch.equal(before[n], after[n].detach())}
    assert any(n.startswith("head.") for n in changed)
    assert any(n.startswith("backbone.") for n in changed)
    if method == "adalora":
        cfg_ada = model.backbone.peft_config["default"]
        assert cfg_ada.rank_pattern is not None  # update_and_allocate ran and fixed the budget
        kept = sum(int((p != 0).sum()) for n, p in model.named_parameters() if ".lora_E." in n)
        assert kept <= 2 * len(setup.target_modules)  # pruned to target_r on average


def test_adalora_regulariser(tokenizer):
    setup = prepare(RegressionModel(_tiny_roformer(tokenizer)), "adalora", total_steps=10)
    model = setup.model
    pred = model(**_batch(tokenizer, SMILES[:2]))
    reg = setup.hooks.extra_loss(model, None, pred, None)
    assert reg.ndim == 0 and reg.item() > 0
    reg.backward()
    a = next(p for n, p in model.named_parameters() if ".lora_A." in n)
    assert a.grad is not None and a.grad.abs().sum() > 0
    no_reg = prepare(
        RegressionModel(_tiny_roformer(tokenizer)), "adalora", AdaLoraSettings(orth_reg_weight=0.0), total_steps=10
    )
    assert no_reg.hooks.extra_loss is None


# --- merge and save ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_merge_save_load_same_predictions(tokenizer, tmp_path, method):
    setup = prepare(RegressionModel(_tiny_roformer(tokenizer)), method)
    model = setup.model.eval()
    torch.manual_seed(1)
    with torch.no_grad():  # make the adapters non-trivial (LoRA's B starts at zero, IA3 at one)
        for n, p in model.named_parameters():
            if n.startswith("backbone.") and n in dict(setup.hooks.trainable(model)):
                p.add_(0.3 * torch.randn_like(p))
    batch = _batch(tokenizer, SMILES)
    with torch.no_grad():
        unmerged = model(**batch)
        with model.backbone.disable_adapter():
            base = model(**batch)
    assert not torch.allclose(unmerged, base, atol=1e-4)  # the adapter matters
    merge_and_save(model, tmp_path / "merged")
    loaded, meta = RegressionModel.load(tmp_path / "merged")
    assert not isinstance(loaded.backbone, PeftModel)
    assert meta["merged_from"] == {"lora": "LORA", "dora": "LORA", "ia3": "IA3"}[method]
    assert not any("lora" in n or "ia3" in n for n, _ in loaded.named_parameters())
    with torch.no_grad():
        reloaded = loaded(**batch)
    torch.testing.assert_close(reloaded, unmerged, atol=1e-5, rtol=1e-5)


def test_merge_and_save_full_model(tokenizer, tmp_path):
    setup = prepare(RegressionModel(_tiny_roformer(tokenizer)), "bitfit")
    model = setup.model.eval()
    batch = _batch(tokenizer, SMILES[:4])
    with torch.no_grad():
        ref = model(**batch)
    loaded, meta = RegressionModel.load(merge_and_save(model, tmp_path / "m"))
    assert meta["merged_from"] is None
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), ref, atol=1e-6, rtol=1e-6)


# --- measurements -----------------------------------------------------------------------------------


def test_peak_memory_cpu():
    # the increase of the resident set over its value at entry: earlier tests' garbage, freed during the block,
    # would hide the allocation (seen once in a long single-process run: +0.004 MiB over 840 MiB)
    gc.collect()
    with peak_memory("cpu", interval=0.002) as mem:
        big = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        big += 1
    assert mem.source == "rss"
    assert mem.samples >= 1
    assert 48 <= mem.peak_mib < 1024
    del big
    with peak_memory("cpu") as idle:
        pass
    assert idle.peak_mib < 16


def test_inference_seconds(tokenizer):
    model = RegressionModel(_tiny_roformer(tokenizer)).eval()
    seconds = inference_seconds(model, tokenizer, SMILES, batch_size=4, repeats=2, mixed_precision="no")
    assert 0 < seconds < 10
    with pytest.raises(ValueError):
        inference_seconds(model, tokenizer, SMILES, repeats=0)


def test_a_new_peft_method_is_one_registration(tokenizer, monkeypatch):
    """The registry's docstring example: a head-only method, registered once, is set up by prepare()."""
    from dataclasses import dataclass

    from molft_utils.core.registry import Registry
    from molft_utils.methods.peft_methods import setup as pm  # the module whose registry prepare() reads

    reg = Registry("fine-tuning method")
    for name, entry in pm.PEFT_METHODS.items():
        reg.register(name, entry)
    monkeypatch.setattr(pm, "PEFT_METHODS", reg)

    @dataclass
    class HeadOnlySettings:
        pass

    def head_only(model, settings, hooks, total_steps):
        hooks.trainable = pm._selector(lambda name: name.startswith("head."))
        return []

    reg.register("head-only", pm.PeftMethod(HeadOnlySettings, head_only))
    setup = pm.prepare(RegressionModel(_tiny_roformer(tokenizer)), "head-only")
    assert setup.n_trainable_backbone == 0 and setup.n_trainable > 0
    assert isinstance(pm.default_settings("head-only"), HeadOnlySettings)
    with pytest.raises(TypeError, match="head-only needs HeadOnlySettings"):
        pm.prepare(RegressionModel(_tiny_roformer(tokenizer)), "head-only", LoraSettings())
    assert pm.METHODS == ("full", "bitfit", "lora", "ia3", "adalora", "dora")


@pytest.mark.parametrize("method", ["lora", "dora", "adalora"])
def test_adapter_dropout_follows_the_models_fast_path(tokenizer, method):
    """peft's lora_dropout modules draw masks like the rest of the fast model (same p); eager models keep torch's."""
    from molft_utils.models.backbone import FastDropout

    fast = prepare(RegressionModel(_tiny_roformer(tokenizer)), method, total_steps=10).model
    lora_dropouts = [m for n, m in fast.backbone.named_modules() if "lora_dropout" in n and isinstance(m, nn.Dropout)]
    assert lora_dropouts and all(type(m) is FastDropout for m in lora_dropouts)
    assert {m.p for m in lora_dropouts} == {LoraSettings().dropout}
    assert not any(type(m) is nn.Dropout for m in fast.backbone.modules())  # every dropout drawn the fast way
    eager = prepare(RegressionModel(_tiny_roformer(tokenizer), fast=False), method, total_steps=10).model
    assert not any(isinstance(m, FastDropout) for m in eager.backbone.modules())
    # dropout in training mode still drops about p of the activations
    layer = lora_dropouts[0].train()
    x = torch.ones(200_000)
    assert abs((layer(x) == 0).float().mean().item() - layer.p) < 0.01
