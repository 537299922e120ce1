"""Tests of the exact output-layer checks, the planted-noise experiment, the sign convention and batched head grads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molft_utils.methods import influence as inf
from molft_utils.models.backbone import RegressionModel
from molft_utils.runs import influence_runs as ip

torch.set_num_threads(1)


def _problem(seed: int = 0, n: int = 120, d: int = 6, m: int = 40):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)

    def draw(k: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.hstack([rng.normal(size=(k, d)), np.ones((k, 1))])
        return x, x[:, :d] @ w + 0.3 * rng.normal(size=k)

    return {name: draw(k) for name, k in (("train", n), ("valid", 50), ("test", 50), ("pool", m))}


def test_exact_addition_effects_match_a_brute_force_refit():
    data = _problem()
    phi, y = data["train"]
    lam = inf.ridge_damping(phi, 0.05)
    layer = inf.fit_output_layer(phi, y, lam)
    res = inf.exact_addition_effects(layer, *data["valid"], *data["pool"])
    n = len(phi)
    for i in (0, 7, 21):
        xz, yz = data["pool"][0][i], data["pool"][1][i]
        # J + ℓ(z)/n: the normal equations with the added row weighted 1/n
        a = 2 * (phi.T @ phi + np.outer(xz, xz)) / n + lam * np.eye(phi.shape[1])
        theta = np.linalg.solve(a, 2 * (phi.T @ y + xz * yz) / n)
        new = np.mean((data["valid"][0] @ theta - data["valid"][1]) ** 2)
        assert res["actual"][i] == pytest.approx(new - layer.mse(*data["valid"]), rel=1e-8, abs=1e-14)
    assert res["pearson"] > 0.99  # a quadratic objective: only the 1/n² term separates them
    # the gradient of the objective vanishes at the fitted θ
    grad = layer.sample_grads(phi, y).mean(0) + lam * layer.theta
    assert np.abs(grad).max() < 1e-10


def test_sign_convention_on_a_constructed_case():
    """Known answer: a copy of a validation molecule with its own label helps (score > 0, loss falls); the same
    molecule with the label reflected through the prediction has the opposite gradient, so the opposite score."""
    data = _problem(1)
    layer = inf.fit_output_layer(*data["train"], inf.ridge_damping(data["train"][0], 0.05))
    xv, yv = data["valid"]
    reflected = 2 * layer.predict(xv) - yv
    agree = inf.exact_addition_effects(layer, xv, yv, xv, yv)
    disagree = inf.exact_addition_effects(layer, xv, yv, xv, reflected)
    np.testing.assert_allclose(disagree["scores"], -agree["scores"], rtol=1e-10, atol=1e-14)
    # Σ over the copies = n_val · gᵀ(H + λI)⁻¹g > 0 whatever the fit
    assert agree["scores"].sum() > 0 and disagree["scores"].sum() < 0
    # the score's sign is the sign of the exact change, for the clear cases
    clear = np.abs(agree["scores"]) > 0.1 * np.abs(agree["scores"]).max()
    assert np.all(np.sign(agree["actual"][clear]) == -np.sign(agree["scores"][clear]))


def test_sign_convention_end_to_end_through_head_influence(tiny_mlm, tokenizer):
    """The same construction through the pipeline the lesson uses (features, Lanczos damping, CG, LiSSA)."""
    torch.manual_seed(1)
    tiny = RegressionModel(tiny_mlm.roformer).eval()
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "CCCCO", "c1ccncc1", "CC(C)O", "OC(=O)c1ccccc1"]
    y = np.linspace(-1.0, 1.0, len(smiles))
    tr, va = slice(0, 5), slice(5, 8)
    feats = ip.head_features(tiny, tokenizer, smiles[va])
    pred = tiny.head(feats).squeeze(-1).detach().double().numpy()
    agree = ip.head_influence(tiny, tokenizer, smiles[tr], y[tr], smiles[va], y[va], smiles[va], y[va],
                              damping_fraction=0.05, cg_tol=1e-10, eig_tol=1e-10)
    flip = ip.head_influence(tiny, tokenizer, smiles[tr], y[tr], smiles[va], y[va], smiles[va], 2 * pred - y[va],
                             damping_fraction=0.05, cg_tol=1e-10, eig_tol=1e-10)
    assert flip.damping == pytest.approx(agree.damping, rel=1e-6)  # Lanczos to a tight tolerance: the same λ
    np.testing.assert_allclose(flip.scores, -agree.scores, rtol=1e-4, atol=1e-7 * np.abs(agree.scores).max())
    assert agree.scores.sum() > 0
    assert np.isfinite(agree.lissa_info.extra["rel_residual"]) and agree.lissa_info.extra["rel_residual"] < 1e-2


def test_corrupt_labels_and_detection_metrics():
    y = np.zeros(50)
    noisy, bad = inf.corrupt_labels(y, 0.2, 2.0, seed=3)
    assert bad.sum() == 10 and np.all(np.abs(noisy[bad]) == 2.0) and np.all(noisy[~bad] == 0)
    again, bad2 = inf.corrupt_labels(y, 0.2, 2.0, seed=3)
    assert np.array_equal(bad, bad2) and np.array_equal(noisy, again)
    perfect = inf.detection_metrics(bad.astype(float), bad, [10])
    assert perfect["auc"] == 1.0 and perfect["precision@10"] == 1.0
    worst = inf.detection_metrics(-bad.astype(float), bad, [10])
    assert worst["auc"] == 0.0 and worst["precision@10"] == 0.0


def test_planted_noise_finds_planted_labels_with_loss_and_self_influence():
    data = _problem(2, m=100)
    phi = {k: v[0] for k, v in data.items()}
    y = {k: v[1] for k, v in data.items()}
    out = inf.planted_noise(phi, y, inf.ridge_damping(phi["train"], 0.01), 0.2, 2.0, seed=0)
    det = out["detection"]["candidates"]
    assert out["n_corrupted"] == 20
    assert det["loss"]["auc"] > 0.9 and det["self-influence"]["auc"] > 0.9
    assert set(det) == set(inf.RANKERS)
    rem = out["removal"]
    assert rem["train + pool without the corrupted (oracle)"]["test_rmse"] < rem["train + noisy pool"]["test_rmse"]
    assert set(out["selection"]) == {"none", "helpful", "harmful", "random"}
    # the helpful selection is chosen on validation: it lowers the validation loss (exact refit, small k)
    assert out["selection"]["helpful"]["valid_rmse"] < out["selection"]["harmful"]["valid_rmse"]


def test_batched_head_scores_equal_the_loop():
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    x, y = torch.randn(30, 8), torch.randn(30)
    p = sum(t.numel() for t in head.parameters())
    h = torch.randn(p, 2, dtype=torch.float64)
    bench = inf.benchmark_head_scoring(head, x, y, h)
    scale = bench["max_abs_score"]
    assert bench["max_abs_diff_vmap"] <= 1e-5 * scale and bench["max_abs_diff_matmul"] <= 1e-5 * scale
    assert head.training  # mode restored
    one = inf.head_projected_grads(head.eval(), x, y, h[:, 0])
    assert one.shape == (30,)
