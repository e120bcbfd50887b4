#!/usr/bin/env python3
"""Replays cohort's training steps in PyTorch (float64) and compares the weights they reach.

PyTorch is an oracle written by other people: where cohort's DML loss, its gradients, the
schedules or the optimizers differ from the usual definitions, the weights part after a few
steps. The input is a JSON file written by tests/torch_parity.rs:

    {"backend": "...", "cases": [{"name", "schedule": "simultaneous" | "alternating",
      "activation": "relu" | "gelu" | "tanh" | "identity", "alpha", "temperature",
      "label_smoothing", "optimizer": {"kind": "sgd" | "adam" | "adamw", "lr", "weight_decay",
      "momentum", "nesterov", "beta1", "beta2", "eps"}, "cols", "features" (rows x cols,
      row-major), "labels", "batches" (row indices of each step),
      "before" / "after": {"peer{i}.layer{l}.weight" ([in, out]) or ".bias": [values]}}]}

Each case builds the peers with torch_reference.make_peer, copies the weights of "before", runs
one step per batch and compares with "after". "simultaneous" sums every peer's loss
(torch_reference.dml_loss) for one backward pass and one step; "alternating" is the paper's
Algorithm 1: peer by peer, its loss against the others' current predictions (recomputed after
each update), a backward pass and a step of that peer alone. The learning rate is constant;
weight decay applies to weights and biases alike (PyTorch's default).

Usage: python3 benches/reference/torch_parity.py STEPS.json [--tolerance 2e-5]
Prints the largest |cohort - torch| of each case. Exit status: 0 when every case is within the
tolerance, 1 when one is not, 2 without PyTorch (nothing was checked).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import dml_loss, make_peer, peer_loss  # noqa: E402


def build_optimizer(torch, params, spec):
    kind = spec["kind"]
    if kind == "sgd":
        return torch.optim.SGD(
            params, lr=spec["lr"], momentum=spec["momentum"], nesterov=spec["nesterov"],
            weight_decay=spec["weight_decay"],
        )
    adam = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    return adam(
        params, lr=spec["lr"], betas=(spec["beta1"], spec["beta2"]), eps=spec["eps"],
        weight_decay=spec["weight_decay"],
    )


def peer_sizes(weights, peer):
    """Layer widths of `peer` from its weight shapes ([in, out] per layer)."""
    sizes, layer = [], 0
    while f"peer{peer}.layer{layer}.weight" in weights:
        fan_in, fan_out = weights[f"peer{peer}.layer{layer}.weight"]["shape"]
        sizes = sizes or [fan_in]
        sizes.append(fan_out)
        layer += 1
    return sizes


def replay(torch, case):
    """The largest |cohort - torch| over every weight and bias after the case's steps."""
    import torch.nn as nn
    import torch.nn.functional as F

    activations = {
        "relu": nn.ReLU,
        "gelu": lambda: nn.GELU(approximate="tanh"),
        "tanh": nn.Tanh,
        "identity": nn.Identity,
    }
    before, after = case["before"], case["after"]
    count = 1 + max(int(name.split(".")[0][len("peer"):]) for name in before)
    peers = []
    for p in range(count):
        peer = make_peer(nn, peer_sizes(before, p), activations[case["activation"]]).double()
        linears = [m for m in peer if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for l, linear in enumerate(linears):
                w = before[f"peer{p}.layer{l}.weight"]
                linear.weight.copy_(torch.tensor(w["data"]).reshape(w["shape"]).T)
                linear.bias.copy_(torch.tensor(before[f"peer{p}.layer{l}.bias"]["data"]))
        peers.append(peer)

    x_all = torch.tensor(case["features"], dtype=torch.float64).reshape(-1, case["cols"])
    y_all = torch.tensor(case["labels"], dtype=torch.int64)
    loss_args = (case["alpha"], case["temperature"], case["label_smoothing"])
    if case["schedule"] == "simultaneous":
        opt = build_optimizer(torch, [q for m in peers for q in m.parameters()], case["optimizer"])
        for rows in case["batches"]:
            x, y = x_all[rows], y_all[rows]
            opt.zero_grad(set_to_none=True)
            dml_loss(F, [m(x) for m in peers], y, *loss_args).backward()
            opt.step()
    elif case["schedule"] == "alternating":
        opts = [build_optimizer(torch, m.parameters(), case["optimizer"]) for m in peers]
        for rows in case["batches"]:
            x, y = x_all[rows], y_all[rows]
            for i, opt in enumerate(opts):
                opt.zero_grad(set_to_none=True)
                peer_loss(F, [m(x) for m in peers], i, y, *loss_args).backward()
                opt.step()
    else:
        sys.exit(f"unknown schedule {case['schedule']!r}")

    worst = 0.0
    for p, peer in enumerate(peers):
        linears = [m for m in peer if isinstance(m, nn.Linear)]
        for l, linear in enumerate(linears):
            w = after[f"peer{p}.layer{l}.weight"]
            ours = torch.tensor(w["data"], dtype=torch.float64).reshape(w["shape"])
            worst = max(worst, (ours - linear.weight.detach().T).abs().max().item())
            ours = torch.tensor(after[f"peer{p}.layer{l}.bias"]["data"], dtype=torch.float64)
            worst = max(worst, (ours - linear.bias.detach()).abs().max().item())
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", help="the JSON file of tests/torch_parity.rs")
    parser.add_argument("--tolerance", type=float, default=2e-5)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError as e:
        print(f"no PyTorch ({e}): nothing checked")
        return 2
    with open(args.steps) as f:
        steps = json.load(f)
    failed = 0
    print(f"cohort on {steps['backend']} against PyTorch {torch.__version__} (float64)")
    for case in steps["cases"]:
        worst = replay(torch, case)
        ok = worst <= args.tolerance
        failed += not ok
        print(f"  {case['name']:<36} max |cohort - torch| {worst:.2e}  {'ok' if ok else 'FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
