from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TINY_SMILES
from transformers import RoFormerModel

from molft_utils.methods.robust import (
    LayerwiseInterpolation,
    bss_hooks,
    bss_penalty,
    coarse_groups,
    feature_map_hooks,
    fit_roft_mol,
    greedy_soup,
    l2sp_hooks,
    l2sp_penalty,
    label_subset,
    layer_groups,
    linear_probe_hooks,
    lp_ft,
    snapshot_state,
    surgical_hooks,
    uniform_soup,
    wise_ft,
)
from molft_utils.models.backbone import RegressionModel
from molft_utils.pretraining.pretrain import backbone_config
from molft_utils.training.collate import collate, encode
from molft_utils.training.train import TargetScaler, TrainConfig, fit, predict

torch.set_num_threads(1)

SMILES = TINY_SMILES + ["CCCC", "OCCO", "c1ccncc1", "CC(C)O", "CCOC(=O)C", "NCCN"]
Y = [float(len(s)) / 10 for s in SMILES]
QUICK = TrainConfig(epochs=2, batch_size=4, lr_backbone=1e-2, lr_head=1e-2, patience=5, mixed_precision="no")


def _model(tokenizer, layers: int = 3) -> RegressionModel:
    torch.manual_seed(1)
    config = backbone_config(len(tokenizer), layers=layers, hidden=32, heads=2, intermediate=64)
    return RegressionModel(RoFormerModel(config)).eval()


def _perturbed(model: RegressionModel, seed: int, scale: float = 0.05) -> RegressionModel:
    """A stand-in for a fine-tuned model: every trainable float tensor moved by noise."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=gen))
    return out.eval()


def _batch(tokenizer, smiles=SMILES):
    return collate(tokenizer, encode(tokenizer, smiles), torch.device("cpu"))


# ------------------------------------------------------------------------------------------- groups
def test_layer_groups_cover_every_parameter_once(tokenizer):
    model = _model(tokenizer, layers=3)
    groups = layer_groups(model)
    assert list(groups) == ["embeddings", "layer.0", "layer.1", "layer.2", "head"]
    flat = [n for names in groups.values() for n in names]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters())
    assert len(flat) == len(set(flat))
    assert "backbone.encoder.embed_positions.weight" in groups["embeddings"]
    assert all(".layer.1." in n for n in groups["layer.1"])
    assert groups["head"] == [n for n, _ in model.named_parameters() if n.startswith("head.")]


def test_coarse_groups_split_four_layers_2_1_1(tokenizer):
    model = _model(tokenizer, layers=4)
    coarse = coarse_groups(model)
    fine = layer_groups(model)
    assert list(coarse) == ["embeddings", "early", "middle", "late"]
    assert coarse["early"] == fine["layer.0"] + fine["layer.1"]
    assert coarse["middle"] == fine["layer.2"]
    assert coarse["late"] == fine["layer.3"]


# ----------------------------------------------------------------------------------------- partial
def test_linear_probe_keeps_backbone_bit_identical(tokenizer):
    model = _model(tokenizer, layers=1)
    before = snapshot_state(model)
    res = fit(model, tokenizer, SMILES, Y, SMILES, Y, QUICK, linear_probe_hooks(), progress=False)
    after = model.state_dict()
    assert res.n_trainable == sum(p.numel() for p in model.head.parameters())
    for k, v in before.items():
        if k.startswith("backbone."):
            assert torch.equal(v, after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_surgical_changes_only_chosen_group_and_head(tokenizer):
    model = _model(tokenizer, layers=3)
    before = snapshot_state(model)
    fit(model, tokenizer, SMILES, Y, SMILES, Y, QUICK, surgical_hooks("middle"), progress=False)
    allowed = set(coarse_groups(model)["middle"]) | {n for n, _ in model.named_parameters() if n.startswith("head.")}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed, "nothing trained"
    assert changed <= allowed
    assert any(".layer.1." in k for k in changed) and any(k.startswith("head.") for k in changed)
    with pytest.raises(ValueError):
        surgical_hooks("top")


def test_lp_ft_runs_probe_then_full(tokenizer):
    model = _model(tokenizer, layers=1)
    cfg = TrainConfig(epochs=1, batch_size=4, patience=5, mixed_precision="no")
    lp, ft = lp_ft(model, tokenizer, SMILES, Y, SMILES, Y, cfg, cfg, progress=False)
    assert lp.n_trainable == sum(p.numel() for p in model.head.parameters())
    assert ft.n_trainable == sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------- regularisers
def test_l2sp_zero_at_pretrained_and_matches_hand_computation(tokenizer):
    model = _model(tokenizer, layers=1)
    pt = snapshot_state(model.backbone)
    hooks = l2sp_hooks(pt, alpha=0.1, beta=0.3)
    with torch.no_grad():
        for p in model.head.parameters():
            p.zero_()
    assert hooks.extra_loss(model, None, None, None).item() == 0.0
    with torch.no_grad():
        model.backbone.embeddings.LayerNorm.bias.add_(0.5)  # 32 entries, each off by 0.5
        model.head[3].bias.fill_(2.0)
    # 0.1/2 * 32 * 0.25 + 0.3/2 * 4 = 0.4 + 0.6
    assert hooks.extra_loss(model, None, None, None).item() == pytest.approx(1.0, rel=1e-6)
    prefixed = {f"backbone.{k}": v for k, v in pt.items()}
    assert l2sp_penalty(model, prefixed, 0.1, 0.3).item() == pytest.approx(1.0, rel=1e-6)


def test_feature_map_zero_at_pretrained_and_equals_formula(tokenizer):
    model = _model(tokenizer, layers=1)
    hooks = feature_map_hooks(model.backbone, delta=0.7)
    batch = _batch(tokenizer)
    pred, feats = model(**batch, return_features=True)
    assert hooks.extra_loss(model, batch, pred, feats).item() == 0.0
    ft = _perturbed(model, seed=3)
    pred, f_ft = ft(**batch, return_features=True)
    with torch.no_grad():
        f_pt = model.embed(**batch)
    expected = 0.7 / 2 * ((f_ft - f_pt) ** 2).sum(1).mean()
    got = hooks.extra_loss(ft, batch, pred, f_ft)
    assert got.item() > 0
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    got.backward()
    assert ft.backbone.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_bss_equals_smallest_squared_singular_values():
    f = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    assert bss_penalty(f, 0.5, k=1).item() == pytest.approx(0.5 * 4.0)
    assert bss_penalty(f, 0.5, k=2).item() == pytest.approx(0.5 * 13.0)
    g = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    sigma = torch.linalg.svdvals(g)
    hook = bss_hooks(delta=0.1, k=1)
    assert hook.extra_loss(None, None, None, g).item() == pytest.approx(0.1 * sigma.min().item() ** 2, rel=1e-5)


# ------------------------------------------------------------------------------------ WiSE-FT, soups
def test_wise_ft_endpoints_and_midpoint(tokenizer):
    pt_model = _model(tokenizer, layers=2)
    pt_state = snapshot_state(pt_model.backbone)
    ft = _perturbed(pt_model, seed=1)
    at0 = wise_ft(pt_state, ft, 0.0)
    for k, v in at0.backbone.state_dict().items():
        assert torch.equal(v, pt_state[k]), k
    for k, v in at0.head.state_dict().items():
        assert torch.equal(v, ft.head.state_dict()[k])
    at1 = wise_ft(pt_state, ft, 1.0)
    for k, v in at1.state_dict().items():
        assert torch.equal(v, ft.state_dict()[k]), k
    scaler = TargetScaler("none")
    np.testing.assert_array_equal(
        predict(at1, tokenizer, SMILES, scaler, mixed_precision="no"),
        predict(ft, tokenizer, SMILES, scaler, mixed_precision="no"),
    )
    mid = wise_ft(pt_state, ft, 0.5)
    ft_state = ft.backbone.state_dict()
    for k, v in mid.backbone.state_dict().items():
        torch.testing.assert_close(v, (pt_state[k] + ft_state[k]) / 2)
    assert not torch.equal(
        mid.backbone.embeddings.word_embeddings.weight, ft_state["embeddings.word_embeddings.weight"]
    )


def test_uniform_soup_is_elementwise_mean(tokenizer):
    base = _model(tokenizer, layers=1)
    a, b = _perturbed(base, 1), _perturbed(base, 2)
    soup = uniform_soup([a, b])
    sa, sb = a.state_dict(), b.state_dict()
    for k, v in soup.state_dict().items():
        torch.testing.assert_close(v, (sa[k] + sb[k]) / 2, rtol=0, atol=1e-7)


def test_greedy_soup_never_accepts_a_worse_soup(tokenizer):
    base = _model(tokenizer, layers=1)

    def with_bias(value: float) -> RegressionModel:
        m = copy.deepcopy(base)
        with torch.no_grad():
            m.head[3].bias.fill_(value)
        return m

    def score(m: RegressionModel) -> float:  # distance of the output bias to 0.4: lower is better
        return abs(m.head[3].bias.item() - 0.4)

    models = [with_bias(10.0), with_bias(0.0), with_bias(1.0)]
    soup, ingredients, rows = greedy_soup(models, score)
    assert ingredients == [1, 2]  # 0.0 (best alone), then 1.0 (soup bias 0.5); 10.0 would give 3.67
    assert soup.head[3].bias.item() == pytest.approx(0.5)
    assert [r["accepted"] for r in rows] == [True, True, False]
    # random cases: the soup score only ever improves and never exceeds the best single model
    rng = np.random.default_rng(0)
    for _ in range(5):
        models = [with_bias(float(v)) for v in rng.normal(0.4, 2.0, size=4)]
        soup, ingredients, rows = greedy_soup(models, score)
        best = rows[0]["soup_score"]
        for r in rows[1:]:
            if r["accepted"]:
                assert r["soup_score"] <= best
                best = r["soup_score"]
            else:
                assert r["soup_score"] > best
        assert score(soup) == pytest.approx(best) and best <= min(score(m) for m in models)


# ----------------------------------------------------------------------------------------- RoFt-Mol
def test_layerwise_interpolation_gradients_reach_every_group(tokenizer):
    pt_model = _model(tokenizer, layers=3)
    ft = _perturbed(pt_model, seed=1, scale=0.2)
    for param in ("clamp", "sigmoid"):
        module = LayerwiseInterpolation(snapshot_state(pt_model.backbone), ft, parameterisation=param)
        assert module.group_names == ["embeddings", "layer.0", "layer.1", "layer.2"]
        pred = module(**_batch(tokenizer))
        ((pred - 1.0) ** 2).mean().backward()
        grad = module.raw_alpha.grad
        assert grad is not None and grad.shape == (4,)
        assert torch.all(grad.abs() > 0), grad
        assert all(p.grad is None for p in module.model.parameters())


def test_fit_roft_mol_lowers_fit_loss_and_materialises_consistently(tokenizer):
    pt_model = _model(tokenizer, layers=2)
    pt_state = snapshot_state(pt_model.backbone)
    ft = _perturbed(pt_model, seed=1, scale=0.3)
    scaler = TargetScaler("none")
    # labels produced by the interpolation at alpha = 0.3: the fit should move alpha down from 0.9
    y = predict(wise_ft(pt_state, ft, 0.3), tokenizer, SMILES, scaler, mixed_precision="no")
    fit_idx, sel_idx = np.arange(0, 12, 2), np.arange(1, 12, 2)
    res = fit_roft_mol(
        pt_state,
        ft,
        tokenizer,
        SMILES,
        y,
        scaler,
        fit_indices=fit_idx,
        select_indices=sel_idx,
        steps=60,
        lr=0.05,
        batch_size=6,
        eval_every=5,
        patience=20,
        mixed_precision="no",
        device=torch.device("cpu"),
        progress=False,
    )
    assert set(res.alphas) == {"embeddings", "layer.0", "layer.1"}
    np.testing.assert_array_equal(res.fit_indices, fit_idx)
    np.testing.assert_array_equal(res.select_indices, sel_idx)
    # the reported selection RMSE is the returned model's RMSE on the select part (not the fit part)
    sel_pred = predict(res.model, tokenizer, [SMILES[i] for i in sel_idx], scaler, mixed_precision="no")
    assert res.best_select_rmse == pytest.approx(float(np.sqrt(np.mean((sel_pred - y[sel_idx]) ** 2))), rel=1e-4)
    assert all(0.0 <= a <= 1.0 for a in res.alphas.values())
    assert res.best_step > 0 and res.best_select_rmse < res.history[0]["select_rmse"]

    def fit_mse(alpha: list[float]) -> float:
        module = LayerwiseInterpolation(pt_state, ft)
        with torch.no_grad():
            module.raw_alpha.copy_(torch.tensor(alpha))
            pred = module(**_batch(tokenizer, [SMILES[i] for i in fit_idx]))
        return float(((pred - torch.tensor(y[fit_idx], dtype=torch.float32)) ** 2).mean())

    assert fit_mse(list(res.alphas.values())) < 0.5 * fit_mse([0.9, 0.9, 0.9])
    # the returned model predicts what functional_call with the learned alpha predicts
    module = LayerwiseInterpolation(pt_state, ft)
    with torch.no_grad():
        module.raw_alpha.copy_(torch.tensor(list(res.alphas.values())))
        batch = _batch(tokenizer)
        torch.testing.assert_close(res.model(**batch), module(**batch), rtol=1e-6, atol=1e-6)
    # the fine-tuned model passed in is untouched
    for k, v in ft.state_dict().items():
        assert torch.equal(v, _perturbed(pt_model, seed=1, scale=0.3).state_dict()[k])


def test_fit_roft_mol_splits_held_out_data_in_two(tokenizer):
    pt_model = _model(tokenizer, layers=1)
    ft = _perturbed(pt_model, seed=2)
    scaler = TargetScaler("none")
    kw = {"steps": 2, "eval_every": 1, "mixed_precision": "no", "device": torch.device("cpu"), "progress": False}
    res = fit_roft_mol(snapshot_state(pt_model.backbone), ft, tokenizer, SMILES, Y, scaler, fit_fraction=0.5, **kw)
    assert len(res.fit_indices) == 6 and len(res.select_indices) == 6
    assert sorted([*res.fit_indices, *res.select_indices]) == list(range(12))
    with pytest.raises(ValueError, match="overlap"):
        fit_roft_mol(
            pt_model.backbone.state_dict(),
            ft,
            tokenizer,
            SMILES,
            Y,
            scaler,
            fit_indices=[0, 1],
            select_indices=[1, 2],
            **kw,
        )


# --------------------------------------------------------------------------------------- label subset
def test_label_subset_nested_and_deterministic():
    train = np.arange(1000, 1600)
    small, mid, large = (label_subset(train, n, seed=3) for n in (50, 100, 500))
    assert len(small) == 50 and len(mid) == 100 and len(large) == 500
    assert set(small) <= set(mid) <= set(large) <= set(train)
    np.testing.assert_array_equal(small, label_subset(train, 50, seed=3))
    np.testing.assert_array_equal(small, label_subset(train[::-1], 50, seed=3))  # input order irrelevant
    assert not np.array_equal(small, label_subset(train, 50, seed=4))
    np.testing.assert_array_equal(label_subset(train, "all", seed=0), train)
    np.testing.assert_array_equal(label_subset(train, None, seed=0), train)
    with pytest.raises(ValueError):
        label_subset(train, 601, seed=0)


# ------------------------------------------------------------------------------- few-shot protocol
def test_repeats_for_steps_makes_epochs_of_at_least_eval_every_steps():
    from molft_utils.methods.robust import repeats_for_steps

    assert repeats_for_steps(50, 60, 16, 15) == (5, 4)  # 250 molecules = 16 steps per epoch, 60/16 -> 4 epochs
    assert repeats_for_steps(500, 60, 16, 15) == (1, 2)  # 32 steps per epoch
    assert repeats_for_steps(3360, 60, 16, 15) == (1, 1)  # at least one epoch
    with pytest.raises(ValueError):
        repeats_for_steps(0, 10, 4, 2)


def test_fit_steps_repeats_data_and_keeps_the_scaler(tokenizer):
    from molft_utils.methods.robust import fit_steps

    model = _model(tokenizer, layers=1)
    res = fit_steps(model, tokenizer, SMILES[:4], Y[:4], SMILES, Y, steps=6, eval_every=3, config=QUICK)
    assert res.config["repeats_per_epoch"] == 3 and res.config["steps_per_epoch"] == 3
    assert len(res.history) == 2
    reference = TargetScaler("minmax").fit(Y[:4])
    assert (res.scaler.shift, res.scaler.scale) == (reference.shift, reference.scale)


def test_train_method_variants(tokenizer):
    from molft_utils.methods.robust import train_method

    backbone = _model(tokenizer, layers=3).backbone
    before = snapshot_state(backbone)
    args = (backbone, tokenizer, SMILES, Y, SMILES, Y, QUICK, 2, 2)
    lp, lp_res = train_method("LP", *args, lp_lr_head=0.05)
    assert lp_res.config["lr_head"] == 0.05
    assert all(torch.equal(v, lp.backbone.state_dict()[k]) for k, v in before.items())
    lpft, _ = train_method("LP-FT", *args, start=lp)
    assert not torch.equal(lpft.head[0].weight, lp.head[0].weight)
    _, l2 = train_method("L2-SP", *args, strength=0.1)
    assert l2.config["weight_decay"] == 0.0
    with pytest.raises(ValueError):
        train_method("BSS", *args)  # needs a strength
    with pytest.raises(ValueError):
        train_method("Magic", *args)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items()), "backbone must stay untouched"


def test_run_setting_all_methods_consistent(tokenizer):
    from molft_utils.methods.robust import MECHANISM, POST_HOC_METHODS, TRAINED_METHODS, run_setting

    backbone = _model(tokenizer, layers=2).backbone
    part = (SMILES, Y)
    cfg = TrainConfig(epochs=1, batch_size=4, lr_backbone=1e-2, lr_head=1e-2, patience=5, mixed_precision="no")
    methods = (*TRAINED_METHODS, *POST_HOC_METHODS)
    res = run_setting(
        backbone, tokenizer, part, part, part, cfg, methods, steps=2, eval_every=2,
        strengths={"Feature-map": (0.1, 1.0), "BSS": (0.01,), "L2-SP": (0.1,)},
        wise_alphas=(0.0, 1.0), roft_steps=3,
    )  # fmt: skip
    assert list(res.test_metrics) == list(methods)
    assert set(MECHANISM) == set(methods)
    assert set(res.sweep["Feature-map"]) == {0.1, 1.0}
    assert res.chosen["Feature-map"] == min(res.sweep["Feature-map"], key=res.sweep["Feature-map"].get)
    # WiSE-FT at alpha = 1 is the Full FT model (same data as test here)
    one = [r for r in res.wise if r["alpha"] == 1.0][0]
    assert one["test_rmse"] == pytest.approx(res.test_metrics["Full FT"]["rmse"], abs=1e-6)
    assert res.test_metrics["WiSE-FT"]["rmse"] == pytest.approx(min(r["valid_rmse"] for r in res.wise), abs=1e-6)
    assert set(res.roft_alphas) == {"embeddings", "layer.0", "layer.1"}
    assert all(0.0 <= a <= 1.0 for a in res.roft_alphas.values())
    assert len(res.soup_members) == 3 and res.soup["ingredients"]
    # every kept model records its convergence; a 2-step run cannot have converged, nor what is built from it
    assert set(res.convergence) >= set(methods)
    for m in methods:
        assert res.convergence[m]["converged"] is False, m
    assert res.convergence["Full FT"]["epochs_run"] == len(res.histories["Full FT"])
    assert res.convergence["Full FT"]["patience"] == 5
    assert set(res.convergence["RoFt-Mol"]["parts"]) == {"Full FT", "α fit"}
    assert set(res.sweep_convergence["Feature-map"]) == {0.1, 1.0}
    with pytest.raises(ValueError):
        run_setting(backbone, tokenizer, part, part, part, cfg, ("Nope",), steps=2, eval_every=2)


def test_a_new_robust_method_is_one_registration(tokenizer, monkeypatch):
    from molft_utils.core.registry import Registry
    from molft_utils.methods import robust
    from molft_utils.methods.robust import protocol

    reg = Registry("trained robust method")
    for name, entry in robust.TRAINED.items():
        reg.register(name, entry)
    monkeypatch.setattr(protocol, "TRAINED", reg)  # the registry train_method reads
    seen = []

    def build(o):
        seen.append(o.strength)
        return TrainConfig(**{**o.config.__dict__, "lr_head": 0.02}), robust.linear_probe_hooks()

    reg.register("Head-only 0.02", robust.TrainedMethod("partial", build, "delta"))
    backbone = _model(tokenizer, layers=2).backbone
    with pytest.raises(ValueError, match="needs a strength"):
        robust.train_method("Head-only 0.02", backbone, tokenizer, SMILES, Y, SMILES, Y, QUICK, 2, 2)
    _, res = robust.train_method("Head-only 0.02", backbone, tokenizer, SMILES, Y, SMILES, Y, QUICK, 2, 2, strength=3.0)
    assert seen == [3.0] and res.config["lr_head"] == 0.02


# ------------------------------------------------------------------- issue 21: budgets, frozen LP, soups
def test_epoch_budget_and_validation_halves():
    from molft_utils.methods.robust import epoch_budget, split_validation

    cfg = epoch_budget(50, {50: 60, 100: 50, "all": 15}, QUICK)
    assert cfg.epochs == 60 and cfg.batch_size == QUICK.batch_size
    assert epoch_budget("all", {50: 60, "all": 15}, QUICK).epochs == 15
    with pytest.raises(KeyError, match="no epoch budget"):
        epoch_budget(500, {50: 60}, QUICK)
    halves = split_validation(420, seed=0)
    assert halves.sizes() == {"select": 210, "post": 210, "post_fit": 105, "post_select": 105}
    parts = [set(halves.select), set(halves.post_fit), set(halves.post_select)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == set(range(420))
    assert set(halves.post) == parts[1] | parts[2]
    np.testing.assert_array_equal(halves.select, split_validation(420, seed=0).select)
    assert not np.array_equal(halves.select, split_validation(420, seed=1).select)


def test_linear_probe_on_frozen_features_matches_the_probed_model(tokenizer):
    from molft_utils.methods.robust import linear_probe, pooled_features
    from molft_utils.training.convergence import fit_convergence

    backbone = _model(tokenizer, layers=1).backbone
    before = snapshot_state(backbone)
    x = pooled_features(backbone, tokenizer, SMILES, mixed_precision="no")
    assert x.shape == (len(SMILES), backbone.config.hidden_size)
    cfg = TrainConfig(epochs=40, batch_size=4, lr_head=1e-2, patience=5, mixed_precision="no", seed=0)
    model, res = linear_probe(backbone, x, Y, x, Y, cfg)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in before.items()), "encoder frozen"
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items()), "argument untouched"
    assert res.n_trainable == sum(p.numel() for p in model.head.parameters())
    assert res.history[res.best_epoch - 1]["valid_rmse"] == res.best_valid_rmse
    assert res.best_valid_rmse < res.history[0]["valid_rmse"], "the head learned something"
    # the probed model predicts through the encoder what the head predicted on the cached features
    pred = predict(model, tokenizer, SMILES, res.scaler, mixed_precision="no")
    rmse = float(np.sqrt(np.mean((pred - np.asarray(Y)) ** 2)))
    assert rmse == pytest.approx(res.best_valid_rmse, rel=1e-4)
    assert fit_convergence(res)["epochs_run"] == len(res.history)
    # the same initial head as a fine-tune of that seed
    torch.manual_seed(cfg.seed)
    fresh = RegressionModel(copy.deepcopy(backbone))
    model2, _ = linear_probe(backbone, x, Y, x, Y, TrainConfig(**{**cfg.__dict__, "epochs": 1, "lr_head": 0.0}))
    assert torch.allclose(model2.head[0].weight, fresh.head[0].weight)


def test_interpolate_models_endpoints(tokenizer):
    from molft_utils.methods.robust import interpolate_models

    a = _model(tokenizer, layers=1)
    b = _perturbed(a, seed=3)
    for alpha, ref in ((0.0, a), (1.0, b)):
        mixed = interpolate_models(a, b, alpha)
        for k, v in mixed.state_dict().items():
            assert torch.allclose(v, ref.state_dict()[k]), (alpha, k)
    mid = interpolate_models(a, b, 0.5)
    w = "head.0.weight"
    assert torch.allclose(mid.state_dict()[w], 0.5 * (a.state_dict()[w] + b.state_dict()[w]))


def test_uniform_soup_of_two_ingredients_from_a_shared_start_is_no_worse_than_the_worse(tokenizer):
    """Wortsman et al.'s premise on a toy problem: two fine-tunes from the SAME start (same encoder, same probed
    head), differing in learning rate and data order; their uniform soup is no worse on held-out molecules than
    the worse of the two."""
    from molft_utils.methods.robust import linear_probe, pooled_features

    rng = np.random.default_rng(0)
    smiles = SMILES + ["CCCCCC", "CC(=O)O", "c1ccc2ccccc2c1", "OCC(O)CO", "CCCCO", "ClCCl", "CC#N", "C1CCCCC1"]
    y = [0.3 * s.count("C") - 0.5 * s.count("O") + 0.1 * rng.normal() for s in smiles]
    train, held = (smiles[:10], y[:10]), (smiles[10:], y[10:])
    backbone = _model(tokenizer, layers=2).backbone
    x_tr = pooled_features(backbone, tokenizer, train[0], mixed_precision="no")
    x_ho = pooled_features(backbone, tokenizer, held[0], mixed_precision="no")
    probe_cfg = TrainConfig(epochs=30, batch_size=4, lr_head=1e-2, patience=5, mixed_precision="no", seed=0)
    start, lp = linear_probe(backbone, x_tr, train[1], x_ho, held[1], probe_cfg)

    def ingredient(lr: float, order_seed: int) -> RegressionModel:
        model = copy.deepcopy(start)
        cfg = TrainConfig(epochs=4, batch_size=4, lr_backbone=lr, lr_head=lr, patience=10, mixed_precision="no",
                          seed=order_seed)  # fmt: skip
        fit(model, tokenizer, *train, *held, cfg, progress=False)
        return model

    members = [ingredient(1e-3, 1), ingredient(3e-3, 2)]
    assert not torch.equal(members[0].head[0].weight, members[1].head[0].weight), "two different ingredients"

    def rmse(model: RegressionModel) -> float:
        pred = predict(model, tokenizer, held[0], lp.scaler, mixed_precision="no")
        return float(np.sqrt(np.mean((pred - np.asarray(held[1])) ** 2)))

    soup = uniform_soup(members)
    assert rmse(soup) <= max(rmse(m) for m in members) + 1e-6
