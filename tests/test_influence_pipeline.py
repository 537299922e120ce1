"""Tests of molft_utils.runs.influence_runs: head influence on features, verification helpers, retraining."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molft_utils.core.records import ModelCache
from molft_utils.methods import influence as inf
from molft_utils.models.backbone import RegressionModel
from molft_utils.runs import influence_runs as ip
from molft_utils.runs.finetune import FinetuneArtefact
from molft_utils.training.train import TargetScaler, TrainConfig

torch.set_num_threads(1)

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C[C@@H](N)C(=O)O", "O=[N+]([O-])c1ccccc1", "CCN(CC)CC",
          "CCCCO", "c1ccncc1", "CC(C)O", "OC(=O)c1ccccc1"]
Y = np.linspace(-1.0, 1.0, len(SMILES))


@pytest.fixture()
def tiny(tiny_mlm):
    torch.manual_seed(1)
    return RegressionModel(tiny_mlm.roformer).eval()


def test_head_problem_matches_model_head_subset(tiny, tokenizer):
    params = inf.select_parameters(tiny, "head")
    coll = inf.collate_smiles(tokenizer, SMILES, Y)
    batch = coll(np.arange(len(SMILES)))
    model_loss = inf.regression_loss_fn(tiny, params)
    prob = ip.head_problem(tiny)
    assert list(prob.params) == list(params)
    feats = ip.head_features(tiny, tokenizer, SMILES, batch_size=3)
    fb = ip.HeadProblem.collate(feats, Y)(np.arange(len(SMILES)))
    p = {n: v.detach() for n, v in params.items()}
    assert torch.allclose(prob.loss_fn(p, fb), model_loss(p, batch), rtol=1e-5, atol=1e-6)
    v = torch.randn(sum(t.numel() for t in p.values()), generator=torch.Generator().manual_seed(0))
    h_model = inf.HessianOperator(model_loss, p, coll, len(SMILES), 4).matvec(v)
    h_feat = inf.HessianOperator(prob.loss_fn, p, ip.HeadProblem.collate(feats, Y), len(SMILES), 4).matvec(v)
    torch.testing.assert_close(h_feat, h_model, rtol=1e-4, atol=1e-5)


def test_head_influence_matches_module_and_lissa_matches_cg(tiny, tokenizer):
    tr, tg, pl = slice(0, 6), slice(6, 8), slice(4, 10)
    res = ip.head_influence(tiny, tokenizer, SMILES[tr], Y[tr], SMILES[tg], Y[tg], SMILES[pl], Y[pl],
                            damping_fraction=0.05, lissa_depth=3000, lissa_tol=1e-9, cg_tol=1e-10)
    assert res.damping > max(0.0, -res.lambda_min) and res.lambda_max > 0
    ref = inf.influence_scores(tiny, tokenizer, SMILES[tr], Y[tr], SMILES[tg], Y[tg], SMILES[pl], Y[pl],
                               subset="head", solver="cg", damping=res.damping, solver_kwargs={"tol": 1e-10},
                               progress=False)
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-3, atol=1e-6 * np.abs(ref.scores).max())
    assert res.rel_error < 1e-2 and res.spearman > 0.99
    assert res.inverse_hvp is not None and res.inverse_hvp.numel() == res.n_params
    d = res.diagnostics()
    assert d["damping"] == res.damping and np.isfinite(list(d.values())).all()


def test_verification_on_known_answers():
    ridge = ip.verify_ridge(seed=1)
    assert ridge["lissa_rel_error"] < 1e-4 and ridge["cg_rel_error"] < 1e-4
    assert ridge["spearman_vs_retraining"] > 0.95
    net = ip.verify_tiny_network(seed=1, n_cand=8)
    assert net["lissa_rel_error"] < 1e-3 and net["cg_rel_error"] < 1e-3
    assert net["spearman_vs_retraining"] > 0.8
    assert net["predicted"].shape == net["actual"].shape == (8,)


def test_select_additions():
    s = np.array([0.3, -1.0, 2.0, 0.0, -0.5])
    assert list(ip.select_additions(s, 2, "helpful")) == [2, 0]
    assert list(ip.select_additions(s, 2, "harmful")) == [1, 4]
    r = ip.select_additions(s, 3, "random", seed=4)
    assert len(set(r)) == 3 and r.max() < len(s)
    assert list(r) == list(ip.select_additions(s, 3, "random", seed=4))
    assert len(ip.select_additions(s, 0, "helpful")) == 0
    with pytest.raises(ValueError):
        ip.select_additions(s, 6, "helpful")
    with pytest.raises(ValueError):
        ip.select_additions(s, 1, "best")


def test_retrain_with_additions_is_cached_and_uses_additions(tiny_mlm, tokenizer, tmp_path):
    backbone = tmp_path / "backbone"
    tiny_mlm.roformer.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    frame = pd.DataFrame({"smiles": SMILES, "label": Y})
    train, valid, pool = frame.iloc[:5], frame.iloc[5:7], frame.iloc[7:]
    cfg = TrainConfig(epochs=1, batch_size=4, mixed_precision="no", seed=0)
    cache = ModelCache(tmp_path / "cache")
    a = ip.retrain_with_additions(backbone, train, pool.iloc[:0], valid, cfg, cache)
    b = ip.retrain_with_additions(backbone, train, pool.iloc[:0], valid, cfg, cache)
    c = ip.retrain_with_additions(backbone, train, pool, valid, cfg, cache)
    assert not a.cache_hit and b.cache_hit and not c.cache_hit
    assert a.path == b.path != c.path
    for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert len(a.fit.history) == 1 and a.init == "mlm+additions"
    # the scaler is fitted on the labels actually trained on (train + additions)
    assert a.scaler.to_dict() != c.scaler.to_dict()


def _frames():
    frame = pd.DataFrame({"smiles": SMILES, "label": np.linspace(-1.0, 3.0, len(SMILES))})
    return frame.iloc[:5].reset_index(drop=True), frame.iloc[5:7].reset_index(drop=True), frame.iloc[7:].reset_index(
        drop=True
    )


def test_cached_head_influence_hits_and_matches_influence_scores(tiny_mlm, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = RegressionModel(tiny_mlm.roformer, dropout=0.0).eval()  # untrained head: H is indefinite
    train, target, pool = _frames()
    scaler = TargetScaler().fit(train.label)
    art = FinetuneArtefact(model, tokenizer, scaler, None, tmp_path / "finetuned-entry", False, "mlm")
    cache = ModelCache(tmp_path / "cache")
    settings = ip.influence_settings(smoke=True) | {"cg_tol": 1e-10, "lissa_tol": 1e-9, "damping_fraction": 0.05}
    first = ip.cached_head_influence(art, train, target, pool, cache, **settings)
    second = ip.cached_head_influence(art, train, target, pool, cache, **settings)
    assert (first.cache_hit, second.cache_hit) == (False, True) and first.cache_entry == second.cache_entry
    assert np.array_equal(first.scores, second.scores) and np.array_equal(first.scores_lissa, second.scores_lissa)
    assert first.scores.shape == (len(pool),) and first.damping == second.damping
    assert torch.equal(first.inverse_hvp, second.inverse_hvp)
    assert second.cg_info.converged and second.cg_info.iterations == first.cg_info.iterations
    assert second.diagnostics() == first.diagnostics()
    # the damping keeps H + λI positive definite although this head's Hessian is indefinite
    assert second.damping > max(0.0, -second.lambda_min)
    ref = inf.influence_scores(
        model, tokenizer, list(train.smiles), list(train.label), list(target.smiles), list(target.label),
        list(pool.smiles), list(pool.label), scaler=scaler, subset="head", solver="cg", damping=second.damping,
        solver_kwargs={"tol": 1e-10}, progress=False,
    )
    np.testing.assert_allclose(second.scores, ref.scores, rtol=1e-4, atol=1e-6 * np.abs(ref.scores).max())
    assert second.n_params == sum(p.numel() for p in model.head.parameters())
    # a different model entry, target set or solver setting is a different entry
    key = ip.influence_cache_key("finetuned-entry", train, target, pool, **settings)
    assert cache.path_for("influence_scores", key).name == second.cache_entry
    for other in (
        ip.influence_cache_key("other-entry", train, target, pool, **settings),
        ip.influence_cache_key("finetuned-entry", train, pool, pool, **settings),
        ip.influence_cache_key("finetuned-entry", train, target, pool, **(settings | {"lissa_depth": 10})),
    ):
        assert cache.path_for("influence_scores", other) != cache.path_for("influence_scores", key)
    with pytest.raises(TypeError, match="unknown influence settings"):
        ip.influence_cache_key("e", train, target, pool, damping=0.1)


def test_influence_settings_are_shared_defaults():
    assert ip.influence_settings() == ip.influence_settings(False, 0.01, 1000)
    assert ip.influence_settings(True)["lissa_depth"] == 200
    assert ip.influence_settings(False, lissa_depth=50)["lissa_depth"] == 50
    assert ip.influence_settings(False, 0.1)["damping_fraction"] == 0.1


def test_one_set_of_solver_defaults() -> None:
    """head_influence, cached_head_influence and influence_settings share SOLVER_DEFAULTS."""
    import inspect

    for fn in (ip.head_influence, ip.cached_head_influence):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in ip.SOLVER_DEFAULTS} == ip.SOLVER_DEFAULTS, fn.__name__
    assert ip.influence_settings() == ip.SOLVER_DEFAULTS
    assert ip.influence_settings(smoke=True)["lissa_depth"] == min(200, ip.SOLVER_DEFAULTS["lissa_depth"])


def test_k0_retrain_reproduces_the_scored_models_recipe(tiny_mlm, tokenizer, tmp_path):
    """Lesson 02's retrains follow finetuned_model's recipe: with no additions they give the scored model back."""
    from types import SimpleNamespace

    from molft_utils.runs import finetune

    backbone = tmp_path / "backbone"
    tiny_mlm.roformer.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    frame = pd.DataFrame({"smiles": SMILES, "label": Y})
    train, valid, pool = frame.iloc[:6], frame.iloc[6:8], frame.iloc[8:]
    cfg = TrainConfig(epochs=2, batch_size=4, mixed_precision="no", seed=3)
    cache = ModelCache(tmp_path / "cache")
    task = SimpleNamespace(key={"test": "k0"}, train=train, valid=valid)
    scored = finetune.finetuned_model(task, "pretrained", backbone, cfg, cache=cache, progress=False)
    k0 = ip.retrain_with_additions(backbone, train, pool.iloc[:0], valid, cfg, cache)
    for (na, pa), (nb, pb) in zip(scored.model.named_parameters(), k0.model.named_parameters(), strict=True):
        assert na == nb
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert k0.fit.best_valid_rmse == pytest.approx(scored.fit.best_valid_rmse, rel=1e-5)
