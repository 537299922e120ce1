"""Probe: one final run of lesson 04 (method, seed, chosen rate) under a given schedule; records history and test."""
import json, sys, time
from dataclasses import asdict
import torch
from molft_utils.runs.tasks import load_task
from molft_utils.methods import peft_methods
from molft_utils.training.train import TrainConfig, predict
from molft_utils.training.metrics import regression_metrics
method, seed, lr, schedule, backbone, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
torch.set_num_threads(1)
task = load_task("random", seed)
cfg = TrainConfig(epochs=40, patience=5, batch_size=32, lr_backbone=lr, lr_head=1e-3, seed=seed, schedule=schedule,
                  plateau_patience=2)
t0 = time.perf_counter()
setup, res, tok = peft_methods.fine_tune(backbone, method, task.train.smiles, task.train.label, task.valid.smiles,
                                         task.valid.label, cfg)
pred = predict(setup.model, tok, list(task.test.smiles), res.scaler)
rec = {"method": method, "seed": seed, "lr": lr, "config": asdict(cfg), "backbone": backbone,
       "best_epoch": res.best_epoch, "epochs_run": len(res.history), "best_valid_rmse": res.best_valid_rmse,
       "test": regression_metrics(task.test.label.to_numpy(), pred),
       "history": [{k: h[k] for k in ("epoch", "valid_rmse", "lr", "seconds")} for h in res.history],
       "wall_seconds": time.perf_counter() - t0}
json.dump(rec, open(out, "w"), indent=1)
print(out, rec["best_epoch"], rec["epochs_run"], rec["best_valid_rmse"], rec["test"]["rmse"])
