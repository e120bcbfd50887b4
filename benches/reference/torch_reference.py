#!/usr/bin/env python3
"""PyTorch/cuBLAS reference timings to put cohort's benchmarks in context (CUDA; `--device cpu`
is a dry run with host timing and no CUDA graphs, to check the script itself without a GPU).

What it measures, on one CUDA device, with warm-up, CUDA events and torch.cuda.synchronize():

(a) GEMM through torch.matmul (cuBLAS) for each shape, in the layouts cohort's
    benches/matmul.rs uses -- NN (X.W), NT (dY.W^T, B stored [N, K]) and TN (X^T.dY, A stored
    [K, M]) -- at three precisions:
      fp32  SGEMM, torch.backends.cuda.matmul.allow_tf32 = False (true IEEE fp32)
      tf32  fp32 tensors, allow_tf32 = True (tensor cores, 10-bit mantissa products)
      fp16  HGEMM, fp16 inputs and output (PyTorch's default reduced-precision reduction)
    Each sample times `reps` back-to-back calls between two events (reps chosen so a sample lasts
    about --target-ms), and the reported time is the median per call over --iters samples.
    TFLOP/s = 2*B*M*N*K / time.

(b) One Deep Mutual Learning training step of K MLP peers (ReLU hidden layers):
      small: 784-1024-1024-10, batch 256       large: 784-4096-4096-10, batch 1024
    SGD (lr 0.01, momentum 0.9) over all peers' parameters; the loss of peer i is
      CE(z_i, y) + alpha * mean_{j != i} T^2 * KL(p_j.detach() || p_i)
    computed as F.kl_div(F.log_softmax(z_i/T), F.softmax(z_j/T).detach(),
    reduction='batchmean') * T*T (alpha = 1, T = 1 by default; for K = 2 the mean is the one
    other peer, as in cohort's kl_div kernel). The peers' losses are summed and back-propagated
    once, then one optimizer step: cohort's "simultaneous" schedule. Timed two ways:
      eager  zero_grad(set_to_none=True), forward, loss, backward, step, per step;
      graph  the same step captured once in a CUDA graph (static input and labels, warm-up on a
             side stream as in the PyTorch CUDA-graphs docs, grads allocated from the graph's
             pool, optimizer step inside the graph) and timed by g.replay().
    SGD keeps no step counter, so it needs no `capturable=True`; an optimizer that does (Adam,
    AdamW) must be built with capturable=True to be captured -- make_optimizer() shows where.
    The step runs in fp32 with TF32 off unless --dml-tf32 also times it with TF32 on.
    TFLOP/s counts matmul FLOPs only: per peer, forward 2*B*sum(in*out), weight gradients the
    same, input gradients 2*B*sum(in*out) over all but the first layer.

Usage:
    python3 benches/reference/torch_reference.py
    python3 benches/reference/torch_reference.py --shapes 4096x4096x4096,2b256x1024x784 \\
        --configs small --json torch.json
    # cohort's numbers on the same machine (see benches/matmul.rs), then the comparison:
    COHORT_BENCH_SHAPES=4096x4096x4096,1024x1024x1024,256x1024x784,1024x784x256 \\
        COHORT_BENCH_JSON=cohort.json cargo bench --bench matmul
    python3 benches/reference/torch_reference.py --json torch.json --cohort-json cohort.json
    # compare again later without a GPU, from the saved PyTorch results:
    python3 benches/reference/torch_reference.py --from-json torch.json --cohort-json cohort.json
    # issue 4's targets against every variant that benches/reference/run_gpu.sh wrote:
    python3 benches/reference/torch_reference.py --from-json torch.json --cohort-json cohort*.json --targets
    # the targets from cohort's files alone (no PyTorch run: the absolute goals only):
    python3 benches/reference/torch_reference.py --no-pytorch --cohort-json cohort*.json --targets
    # every variant against its baseline, measure by measure (no PyTorch results needed):
    python3 benches/reference/torch_reference.py --cohort-json cohort*.json --variants

Options: --shapes (comma-separated MxNxK, C is MxN with inner dimension K; optional batch prefix
"BbMxNxK", e.g. 2b256x1024x784; default 4096x4096x4096,1024x1024x1024,256x1024x784,1024x784x256),
--transposes (NN,NT,TN), --precisions (fp32,tf32,fp16), --configs (small,large), --peers (2),
--alpha (1.0), --temperature (1.0), --lr (0.01), --warmup, --iters, --dml-warmup, --dml-iters,
--target-ms, --dml-tf32, --skip-gemm, --skip-dml, --json OUT, --cohort-json FILE..., --targets,
--variants, --from-json FILE, --no-pytorch, --device (cuda, cuda:N, or cpu for a dry run: e.g. --device cpu --shapes
64x64x64 --configs small --iters 3 --dml-iters 3 --precisions fp32).

JSON (--json; rewritten after each measure, so a run cut short keeps what it measured):
{"source": "pytorch", "device", "torch", "cuda", "cudnn", "driver", "settings",
"measures": {key: {"median_ms", "tflops", "flops", ...}}} (a DML step on CUDA also has
"memory_bytes": torch.cuda.max_memory_allocated() during it beyond the input batch, i.e. the
peers, optimizer state, gradients and activations; cohort's step bench writes the same for its
model and step buffers, its data set left out, and the comparison prints both) with keys
    matmul/<NN|NT|TN>/<shape>/<fp32|tf32|fp16>       e.g. matmul/NT/256x1024x784/fp32
    dml_step/<small|large>/<eager|graph>/<fp32|tf32>
The cohort JSON (--cohort-json; written by cohort's benches when COHORT_BENCH_JSON is set) uses
the same scheme: matmul/<T>/<shape>/fp32, and dml_step/<config>/fp32 for a trainer step. Keys
are matched after dropping the mode (eager/graph) and precision parts, so a cohort fp32 matmul is
compared with PyTorch's fp32, tf32 and fp16 of the same shape and layout, and a cohort DML step
with both the eager and the graph step. Ratios: time = cohort_ms / pytorch_ms (> 1: cohort is
slower), throughput = cohort TFLOP/s as a percentage of PyTorch's. --targets prints issue 4's
goals (TARGETS below) with every file's measure of each, best first, and whether the best meets
it; a file's label is its name without "cohort-" and ".json" (cohort-tile64.json: tile64).
--variants prints every measure that two or more files hold, each variant's time against its
baseline's (the defaults' run of the same run_gpu.sh part: a file labelled default, hints0 or
auto, cohort-coop-default.json for cohort-coop-prefetch2.json), and lists the variants 3% or
more faster: the candidates for new defaults. Without --from-json it needs no PyTorch and prints
nothing else.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time

DEFAULT_SHAPES = "4096x4096x4096,1024x1024x1024,256x1024x784,1024x784x256"
DML_CONFIGS = {
    "small": {"sizes": [784, 1024, 1024, 10], "batch": 256},
    "large": {"sizes": [784, 4096, 4096, 10], "batch": 1024},
}
MODES = {"eager", "graph"}
PRECISIONS = {"fp32", "tf32", "fp16"}
# Key parts dropped when matching cohort against PyTorch ("mixed": cohort's f16-matmul step).
QUALIFIERS = MODES | PRECISIONS | {"mixed"}


# ----------------------------------------------------------------------------------------------
# Shapes and keys (no torch needed)


def parse_shape(text):
    """'MxNxK' or 'BbMxNxK' -> (B, M, N, K)."""
    s = text.strip().lower()
    batch = 1
    if "b" in s:
        b, s = s.split("b", 1)
        batch = int(b)
    dims = [int(d) for d in s.split("x")]
    if len(dims) != 3 or batch < 1 or min(dims) < 1:
        raise ValueError(f"bad shape '{text}': expected MxNxK or BbMxNxK, all positive")
    return (batch, dims[0], dims[1], dims[2])


def shape_name(shape):
    """The canonical spelling cohort's benches use: '2b256x1024x784', or '256x1024x784'."""
    b, m, n, k = shape
    return (f"{b}b" if b > 1 else "") + f"{m}x{n}x{k}"


def base_key(key):
    """A key without its mode and precision parts, for matching cohort against PyTorch."""
    return "/".join(p for p in key.split("/") if p not in QUALIFIERS)


def dml_flops(sizes, batch, peers):
    """Matmul FLOPs of one DML step: forward, weight gradients, input gradients (not layer 0)."""
    pairs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    per_peer = 2 * batch * sum(pairs) * 2 + 2 * batch * sum(pairs[1:])
    return per_peer * peers


def tflops(flops, ms):
    return flops / (ms * 1e-3) / 1e12 if ms > 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# Timing


def time_cpu(fn, warmup, iters, target_ms):
    """Median host time per call of `fn` in ms (the --device cpu dry run)."""
    for _ in range(warmup):
        fn()
    reps = 1
    if target_ms > 0:
        t0 = time.perf_counter()
        fn()
        est = max((time.perf_counter() - t0) * 1e3, 1e-4)
        reps = max(1, min(10000, int(math.ceil(target_ms / est))))
    per_call = []
    for _ in range(iters):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        per_call.append((time.perf_counter() - t0) * 1e3 / reps)
    return {
        "median_ms": statistics.median(per_call),
        "min_ms": min(per_call),
        "max_ms": max(per_call),
        "wall_ms": sum(per_call) / len(per_call),
        "iters": iters,
        "reps": reps,
    }


def on_cuda(device):
    return device.startswith("cuda")


def time_device(torch, device, fn, warmup, iters, target_ms):
    """Median time per call of `fn` in ms: CUDA events on a GPU, host time in the CPU dry run."""
    if on_cuda(device):
        return time_cuda(torch, fn, warmup, iters, target_ms)
    return time_cpu(fn, warmup, iters, target_ms)


def time_cuda(torch, fn, warmup, iters, target_ms):
    """Median GPU time per call of `fn` in ms, from CUDA events around blocks of `reps` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    reps = 1
    if target_ms > 0:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        est = max(s.elapsed_time(e), 1e-4)
        reps = max(1, min(10000, int(math.ceil(target_ms / est))))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    wall0 = time.perf_counter()
    for i in range(iters):
        starts[i].record()
        for _ in range(reps):
            fn()
        ends[i].record()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - wall0) * 1e3 / (iters * reps)
    per_call = [s.elapsed_time(e) / reps for s, e in zip(starts, ends)]
    return {
        "median_ms": statistics.median(per_call),
        "min_ms": min(per_call),
        "max_ms": max(per_call),
        "wall_ms": wall_ms,
        "iters": iters,
        "reps": reps,
    }


def memory_start(torch, device):
    """Starts a device-memory measure: resets the peak and returns the bytes allocated now
    (None off CUDA, where the dry run measures no memory)."""
    if not on_cuda(device):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def memory_peak(torch, start):
    """The most bytes allocated since memory_start, beyond those allocated then (None off CUDA)."""
    if start is None:
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - start


@contextlib.contextmanager
def tf32(torch, enabled):
    """Sets torch.backends.cuda.matmul.allow_tf32 for the block, then restores it. (Only the
    legacy switch is used, never torch.backends.cuda.matmul.fp32_precision, so the two APIs are
    not mixed.)"""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


# ----------------------------------------------------------------------------------------------
# (a) GEMM


def bench_gemm(torch, args, measures):
    device = args.device
    shapes = [parse_shape(s) for s in args.shapes.split(",") if s.strip()]
    transposes = [t.strip().upper() for t in args.transposes.split(",") if t.strip()]
    precisions = [p.strip().lower() for p in args.precisions.split(",") if p.strip()]
    for t in transposes:
        if t not in ("NN", "NT", "TN", "TT"):
            sys.exit(f"unknown transpose '{t}' (NN, NT, TN, TT)")
    for p in precisions:
        if p not in PRECISIONS:
            sys.exit(f"unknown precision '{p}' (fp32, tf32, fp16)")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    for shape in shapes:
        b, m, n, k = shape
        lead = (b,) if b > 1 else ()
        flops = 2 * b * m * n * k
        for prec in precisions:
            dtype = torch.float16 if prec == "fp16" else torch.float32
            for t in transposes:
                ta, tb = t[0] == "T", t[1] == "T"
                # Stored layouts as in cohort: A is [K, M] when transposed, B is [N, K].
                a = torch.randn(*lead, *((k, m) if ta else (m, k)), device=device, dtype=dtype, generator=gen)
                bm = torch.randn(*lead, *((n, k) if tb else (k, n)), device=device, dtype=dtype, generator=gen)
                out = torch.empty(*lead, m, n, device=device, dtype=dtype)
                a_op = a.mT if ta else a
                b_op = bm.mT if tb else bm

                def fn(a_op=a_op, b_op=b_op, out=out):
                    torch.matmul(a_op, b_op, out=out)

                with tf32(torch, prec == "tf32"):
                    r = time_device(torch, device, fn, args.warmup, args.iters, args.target_ms)
                key = f"matmul/{t}/{shape_name(shape)}/{prec}"
                r.update({"flops": flops, "tflops": tflops(flops, r["median_ms"])})
                measures[key] = r
                print(f"  {key:<40} {r['median_ms']:>10.4f} ms  {r['tflops']:>8.2f} TFLOP/s", flush=True)
                del fn, a, bm, out, a_op, b_op
        if on_cuda(device):
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# (b) DML step


def make_peer(nn, sizes, activation=None):
    """An MLP with layer widths `sizes`; `activation()` (default nn.ReLU) after each hidden layer."""
    activation = activation or nn.ReLU
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def make_optimizer(torch, params, lr, capturable):
    """SGD with momentum 0.9. SGD has no step counter, so graph capture needs nothing special;
    for Adam/AdamW one would pass capturable=capturable here (and a tensor lr if scheduled)."""
    del capturable  # not needed by SGD, see above
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def peer_loss(F, logits, i, labels, alpha, temperature, label_smoothing=0.0):
    """Peer i's loss: CE + alpha * mean_{j != i} T^2 * KL(p_j.detach() || p_i)."""
    zi = logits[i]
    ce = F.cross_entropy(zi, labels, label_smoothing=label_smoothing)
    log_pi = F.log_softmax(zi / temperature, dim=1)
    kl = 0.0
    for j, zj in enumerate(logits):
        if j == i:
            continue
        pj = F.softmax(zj / temperature, dim=1).detach()
        kl = kl + F.kl_div(log_pi, pj, reduction="batchmean") * temperature * temperature
    return ce + alpha * kl / (len(logits) - 1)


def dml_loss(F, logits, labels, alpha, temperature, label_smoothing=0.0):
    """Sum over peers of peer_loss: one backward gives every peer its own gradient."""
    return sum(
        peer_loss(F, logits, i, labels, alpha, temperature, label_smoothing) for i in range(len(logits))
    )


def mib_text(measure):
    """The text "  memory X MiB" for a measure with memory_bytes, else nothing."""
    if measure.get("memory_bytes") is None:
        return ""
    return f"  memory {measure['memory_bytes'] / 2**20:.2f} MiB"


def build_cohort(torch, nn, args, cfg, capturable):
    peers = [make_peer(nn, cfg["sizes"]).to(args.device) for _ in range(args.peers)]
    params = [p for m in peers for p in m.parameters()]
    opt = make_optimizer(torch, params, args.lr, capturable)
    return peers, opt


def bench_dml(torch, args, measures):
    import torch.nn as nn
    import torch.nn.functional as F

    if args.peers < 2:
        sys.exit("--peers must be at least 2")
    precisions = ["fp32"] + (["tf32"] if args.dml_tf32 else [])
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in names:
        if name not in DML_CONFIGS:
            sys.exit(f"unknown config '{name}' ({', '.join(DML_CONFIGS)})")
        cfg = DML_CONFIGS[name]
        batch, sizes = cfg["batch"], cfg["sizes"]
        flops = dml_flops(sizes, batch, args.peers)
        gen = torch.Generator(device=args.device).manual_seed(args.seed)
        x = torch.randn(batch, sizes[0], device=args.device, generator=gen)
        y = torch.randint(0, sizes[-1], (batch,), device=args.device, generator=gen)
        for prec in precisions:
            with tf32(torch, prec == "tf32"):
                torch.manual_seed(args.seed)

                # Eager. Memory from here on: the cohort, its optimizer state, gradients and
                # activations; not the batch (x, y), as cohort's bench leaves out its data set.
                memory = memory_start(torch, args.device)
                peers, opt = build_cohort(torch, nn, args, cfg, capturable=False)
                last = {}

                def eager_step():
                    opt.zero_grad(set_to_none=True)
                    loss = dml_loss(F, [m(x) for m in peers], y, args.alpha, args.temperature)
                    loss.backward()
                    opt.step()
                    last["loss"] = loss.detach()

                r = time_device(torch, args.device, eager_step, args.dml_warmup, args.dml_iters, 0)
                r.update({"flops": flops, "tflops": tflops(flops, r["median_ms"]), "loss": float(last["loss"])})
                if memory is not None:
                    r["memory_bytes"] = memory_peak(torch, memory)
                key = f"dml_step/{name}/eager/{prec}"
                measures[key] = r
                print(f"  {key:<40} {r['median_ms']:>10.4f} ms  {r['tflops']:>8.2f} TFLOP/s  loss {r['loss']:.4f}{mib_text(r)}", flush=True)
                del peers, opt, last
                if not on_cuda(args.device):
                    print(f"  dml_step/{name}/graph/{prec}: skipped (CUDA graphs need a CUDA device)", flush=True)
                    continue

                # CUDA graph: static input/labels, warm-up on a side stream, capture, replay.
                static_x, static_y = x.clone(), y.clone()
                memory = memory_start(torch, args.device)
                peers, opt = build_cohort(torch, nn, args, cfg, capturable=True)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(max(3, args.dml_warmup)):
                        opt.zero_grad(set_to_none=True)
                        loss = dml_loss(F, [m(static_x) for m in peers], static_y, args.alpha, args.temperature)
                        loss.backward()
                        opt.step()
                # The last warm-up loss would keep its autograd graph, made on the side stream,
                # alive into the capture (PyTorch warns of a stream mismatch).
                del loss
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                # Grads set to None so backward() allocates them from the graph's private pool;
                # each replay overwrites them (no zero_grad inside the graph).
                opt.zero_grad(set_to_none=True)
                with torch.cuda.graph(graph):
                    static_loss = dml_loss(F, [m(static_x) for m in peers], static_y, args.alpha, args.temperature)
                    static_loss.backward()
                    opt.step()

                r = time_cuda(torch, graph.replay, args.dml_warmup, args.dml_iters, 0)
                loss = float(static_loss.detach())
                if not math.isfinite(loss):
                    print(f"  warning: graph-replayed loss is {loss}", file=sys.stderr)
                r.update({"flops": flops, "tflops": tflops(flops, r["median_ms"]), "loss": loss,
                          "memory_bytes": memory_peak(torch, memory)})
                key = f"dml_step/{name}/graph/{prec}"
                measures[key] = r
                print(f"  {key:<40} {r['median_ms']:>10.4f} ms  {r['tflops']:>8.2f} TFLOP/s  loss {r['loss']:.4f}{mib_text(r)}", flush=True)
                del peers, opt, graph, static_loss, static_x, static_y
                torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# Reporting


def write_json(path, result):
    """Writes `result` to `path` through a temporary file and a rename, so that a run killed
    mid-write (a GPU lease's deadline) leaves the previous version whole."""
    part = f"{path}.part"
    with open(part, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(part, path)


class SavedMeasures(dict):
    """The measures of a run that rewrites its JSON file (`--json`) after each new measure, so
    that a run killed part-way keeps what it measured."""

    def __init__(self, save):
        super().__init__()
        self._save = save

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._save()


def driver_version():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - any failure just means "unknown"
        pass
    try:
        import pynvml  # type: ignore

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # noqa: BLE001
        return "unknown"


def print_table(result):
    print()
    print(f"PyTorch {result.get('torch')} (CUDA {result.get('cuda')}) on {result.get('device')}, driver {result.get('driver')}")
    print(f"{'measure':<42} {'median ms':>11} {'min ms':>10} {'TFLOP/s':>9} {'reps':>6}")
    print("-" * 82)
    for key, r in result["measures"].items():
        print(f"{key:<42} {r['median_ms']:>11.4f} {r.get('min_ms', float('nan')):>10.4f} {r.get('tflops', float('nan')):>9.2f} {r.get('reps', 1):>6}")


def print_comparison(result, cohort):
    torch_measures = result["measures"]
    cohort_measures = cohort.get("measures", {})
    by_base = {}
    for key in torch_measures:
        by_base.setdefault(base_key(key), []).append(key)
    print()
    print(f"cohort ({cohort.get('device', 'unknown device')}) vs PyTorch ({result.get('device')})")
    print(f"{'cohort measure':<34} {'cohort ms':>11} {'PyTorch measure':<38} {'torch ms':>10} {'time x':>8} {'% thrpt':>8}")
    print("-" * 114)
    unmatched = []
    for key, c in sorted(cohort_measures.items()):
        matches = by_base.get(base_key(key), [])
        if not matches or "median_ms" not in c:
            unmatched.append(key)
            continue
        for tkey in matches:
            t = torch_measures[tkey]
            # A step's GPU time, and where the bench measured it its time per step when steps
            # are submitted back to back (as training runs them, and as PyTorch's loop is timed).
            for label, ms in ((key, c["median_ms"]), (key + " pipelined", c.get("pipelined_ms"))):
                if ms is None:
                    continue
                ratio = ms / t["median_ms"] if t["median_ms"] > 0 else float("nan")
                pct = 100.0 / ratio if ratio > 0 else float("nan")
                print(f"{label:<34} {ms:>11.4f} {tkey:<38} {t['median_ms']:>10.4f} {ratio:>8.2f} {pct:>7.1f}%")
    if unmatched:
        print(f"(no PyTorch counterpart for: {', '.join(unmatched)})")
    # Device memory of the steps: cohort's model and step buffers (data set left out) against
    # PyTorch's peak allocation beyond the input batch.
    rows = []
    for key, c in sorted(cohort_measures.items()):
        for tkey in by_base.get(base_key(key), []):
            t = torch_measures[tkey]
            if c.get("memory_bytes") is not None and t.get("memory_bytes"):
                rows.append((key, c["memory_bytes"], tkey, t["memory_bytes"]))
    if rows:
        print()
        print(f"{'device memory':<34} {'cohort':>11} {'PyTorch measure':<38} {'PyTorch':>14} {'mem x':>8}")
        print("-" * 109)
        for key, cb, tkey, tb in rows:
            print(f"{key:<34} {cb / 2**20:>7.2f} MiB {tkey:<38} {tb / 2**20:>10.2f} MiB {cb / tb:>8.2f}")


# Issue 4's targets: (what, cohort key, PyTorch key or None, goal). A goal ("share", x) wants
# cohort's throughput at least x of PyTorch's (cohort's time at most PyTorch's / x), and
# ("share", x, ms) the same, or where no PyTorch time was measured cohort's time at most ms (the
# issue's measured figure); ("ms", x) wants cohort's time at most x ms.
TRAINING_SHAPES = ["256x1024x784", "1024x784x256"]
TARGETS = (
    [("f32 matmul 4096^3 >= 50% of cuBLAS SGEMM", "matmul/NN/4096x4096x4096/fp32",
      "matmul/NN/4096x4096x4096/fp32", ("share", 0.5)),
     ("f32 matmul 1024^3 >= 30% of SGEMM", "matmul/NN/1024x1024x1024/fp32",
      "matmul/NN/1024x1024x1024/fp32", ("share", 0.3))]
    + [(f"f32 matmul {t} {s} >= 30% of SGEMM", f"matmul/{t}/{s}/fp32", f"matmul/{t}/{s}/fp32",
        ("share", 0.3)) for s in TRAINING_SHAPES for t in ("NN", "NT", "TN")]
    + [("f16 matmul 4096^3 >= 50% of cuBLAS HGEMM", "matmul/NN/4096x4096x4096/fp16",
        "matmul/NN/4096x4096x4096/fp16", ("share", 0.5)),
       ("small step f32 <= 0.27 ms", "dml_step/small/fp32", "dml_step/small/graph/fp32", ("ms", 0.27)),
       ("small step mixed <= 0.27 ms", "dml_step/small/mixed", "dml_step/small/graph/fp32", ("ms", 0.27)),
       ("large step f32 <= PyTorch CUDA graph", "dml_step/large/fp32", "dml_step/large/graph/fp32",
        ("share", 1.0, 5.5)),
       ("large step mixed <= 1.5 ms", "dml_step/large/mixed", "dml_step/large/graph/fp32", ("ms", 1.5))]
)


def cohort_label(path):
    """A short name for a cohort JSON file: 'cohort-tile64.json' -> 'tile64', 'cohort.json' -> 'default'."""
    name = path.rsplit("/", 1)[-1]
    name = name[:-5] if name.endswith(".json") else name
    name = name[len("cohort"):].lstrip("-_") if name.startswith("cohort") else name
    return name or "default"


def meets(goal, cohort_ms, torch_ms):
    """Whether a cohort time meets a goal (None when the PyTorch time it needs is missing and
    the goal gives no time to fall back on)."""
    kind, x = goal[:2]
    if kind == "ms":
        return cohort_ms <= x
    if torch_ms is None:
        return cohort_ms <= goal[2] if len(goal) > 2 else None
    return cohort_ms <= torch_ms / x


def compared_ms(key, measure):
    """The time a target judges: for a training step, the time per step with steps submitted
    back to back (`pipelined_ms`: the GPU's gaps between steps included, as in PyTorch's graph
    replayed in a loop) where measured, else its GPU time; for the rest, the GPU time."""
    if key.startswith("dml_step/") and (measure.get("pipelined_ms") or 0) > 0:
        return measure["pipelined_ms"]
    return measure["median_ms"]


def print_targets(result, cohorts):
    """Issue 4's targets against every cohort file given: each measure in each file (the default
    settings and every A/B variant of run_gpu.sh), its ratio to PyTorch, and whether the best
    one meets the goal. Steps are judged on their time back to back (`compared_ms`), with their
    GPU time (timestamp queries around one step) and wall time (one step, waited for) beside."""
    torch_measures = result["measures"] if result else {}
    print()
    print("Issue 4's targets (best variant first; time x = cohort / PyTorch; % = cohort throughput / PyTorch's;")
    print("steps judged on their time per step back to back, as PyTorch's graph is replayed, where measured)")
    print(f"{'target':<44} {'variant':<24} {'cohort ms':>10} {'GPU ms':>9} {'wall ms':>9} {'PyTorch ms':>11} {'time x':>7} {'%':>7}  met")
    print("-" * 138)
    met_count = measured = unjudged = 0
    for what, ckey, tkey, goal in TARGETS:
        t = torch_measures.get(tkey) if tkey else None
        torch_ms = t["median_ms"] if t and (t.get("median_ms") or 0) > 0 else None
        rows = sorted(
            (compared_ms(ckey, c["measures"][ckey]), label, c["measures"][ckey])
            for label, c in cohorts
            if "median_ms" in c.get("measures", {}).get(ckey, {})
        )
        if not rows:
            print(f"{what:<44} (not measured)")
            continue
        best = meets(goal, rows[0][0], torch_ms)
        met_count += best is True
        measured += 1
        unjudged += best is None
        for i, (ms, label, c) in enumerate(rows):
            ratio = ms / torch_ms if torch_ms else float("nan")
            pct = 100.0 / ratio if torch_ms else float("nan")
            wall = f"{c['wall_ms']:>9.4f}" if "wall_ms" in c else f"{'-':>9}"
            gpu = f"{c['median_ms']:>9.4f}"
            verdict = {True: "yes", False: "no", None: "?"}[best] if i == 0 else ""
            torch_text = f"{torch_ms:>11.4f}" if torch_ms else f"{'-':>11}"
            line = f"{what if i == 0 else '':<44} {label:<24} {ms:>10.4f} {gpu} {wall} {torch_text} {ratio:>7.2f} {pct:>6.1f}%  {verdict}"
            print(line.rstrip())
    print(f"{met_count} of {len(TARGETS)} targets met ({measured} measured by cohort, "
          f"{unjudged} of them without the PyTorch time they need)")
    print_tensor_core_ceiling(torch_measures, cohorts)


F16_PRODUCT = "matmul/NN/4096x4096x4096/fp16"
# benches/coop_peak.rs's probes, each adding one of the tensor-core kernel's costs.
COOP_PROBES = [("registers", "fragment products from registers"),
               ("workgroup", "+ fragments loaded from staged slices"),
               ("barriers", "+ a barrier per k-slice"),
               ("stores", "+ the next k-slice's stores (no global reads)")]


def print_tensor_core_ceiling(torch_measures, cohorts):
    """Where the probes of benches/coop_peak.rs ran: the tensor-core kernel's inner loop alone,
    each probe adding one of its costs (fragments from registers, loaded from staged slices, a
    barrier per k-slice, the next slice's stores), then its 4096^3 f16 product (best variant)
    and cuBLAS's HGEMM, in TFLOP/s, each as a share of HGEMM and of the row before it: where
    between the tensor cores' ceiling on this path and the full kernel the time goes."""
    probes = {}
    for _, c in cohorts:
        for name, _ in COOP_PROBES:
            m = c.get("measures", {}).get(f"coop-peak/{name}", {})
            if (m.get("tflops") or 0) > 0:
                probes[name] = max(probes.get(name, 0.0), m["tflops"])
    if not probes:
        return
    flops = 2 * 4096**3
    products = [c["measures"][F16_PRODUCT]["median_ms"] for _, c in cohorts
                if (c.get("measures", {}).get(F16_PRODUCT, {}).get("median_ms") or 0) > 0]
    t = torch_measures.get(F16_PRODUCT, {})
    hgemm = tflops(flops, t["median_ms"]) if (t.get("median_ms") or 0) > 0 else None
    rows = [(what, probes.get(name)) for name, what in COOP_PROBES]
    rows.append(("cohort's f16 product 4096^3 (best variant)",
                 tflops(flops, min(products)) if products else None))
    print()
    print("Tensor-core ceiling (TFLOP/s; benches/coop_peak.rs; % of HGEMM, and of the row above)")
    above = None
    for what, value in rows + [("cuBLAS HGEMM 4096^3", hgemm)]:
        if value is None:
            print(f"  {what:<48} (not measured)")
            continue
        shares = [f"{100 * value / ref:.1f}% of {name}"
                  for name, ref in (("HGEMM", hgemm), ("the row above", above))
                  if ref and what != "cuBLAS HGEMM 4096^3"]
        print(f"  {what:<48} {value:>8.1f}  {', '.join(shares)}".rstrip())
        above = value


# A file whose label has one of these tokens (between dashes) ran a build's defaults: the
# baseline that run_gpu.sh's variants are compared with (cohort.json is "default"; its parts name
# theirs cohort-coop-default.json, cohort-f32-hints0.json, cohort-splitk-auto-f32.json, ...).
BASELINE_TOKENS = ("default", "hints0", "auto")
# Faster or slower than the baseline by at least this share: flagged in the variant report.
NOTABLE = 0.03


def is_baseline(label):
    """Whether the file labelled `label` ran the defaults."""
    return any(token in BASELINE_TOKENS for token in label.split("-"))


def baseline_for(label, labels):
    """The baseline among `labels` that the variant `label` is compared with: the one sharing
    the most tokens with it, i.e. its own part's defaults (step-rows-default-f16 for
    step-rows-four-f16), ties by name; None for a baseline itself or where no baseline holds
    the measure."""
    if is_baseline(label):
        return None
    tokens = set(label.split("-"))
    return min(
        (b for b in labels if is_baseline(b)),
        key=lambda b: (-len(tokens & set(b.split("-"))), b),
        default=None,
    )


def print_variants(cohorts):
    """Every measure that two or more cohort files hold: each file's time, fastest first, and a
    variant's ratio to its baseline's (see baseline_for); variants at least NOTABLE faster or
    slower are marked, and the faster ones listed at the end: the candidates for new defaults."""
    by_key = {}
    for label, c in cohorts:
        for key, m in c.get("measures", {}).items():
            if "median_ms" in m:
                by_key.setdefault(key, {})[label] = m["median_ms"]
    print()
    print("Variants: each measure two or more files hold, fastest first; a variant's time against its")
    print(f"baseline's (the defaults' run of its part: a file labelled with {', '.join(BASELINE_TOKENS)}),")
    print(f"marked where {NOTABLE:.0%} or more faster or slower")
    faster = []
    for key in sorted(by_key):
        times = by_key[key]
        if len(times) < 2:
            continue
        print(key)
        for label, ms in sorted(times.items(), key=lambda t: (t[1], t[0])):
            base = baseline_for(label, times)
            if is_baseline(label):
                tail = "baseline"
            elif base is None or times[base] <= 0:
                tail = "(no baseline)"
            else:
                ratio = ms / times[base]
                mark = ""
                if ratio <= 1 - NOTABLE:
                    mark = "  faster"
                    faster.append((ratio, key, label, base))
                elif ratio >= 1 + NOTABLE:
                    mark = "  slower"
                tail = f"{ratio:.3f}x {base}{mark}"
            print(f"  {label:<32} {ms:>10.4f} ms  {tail}")
    print()
    if faster:
        print(f"Faster than their baseline by {NOTABLE:.0%} or more:")
        for ratio, key, label, base in sorted(faster):
            print(f"  {label:<32} {key:<44} {ratio:.3f}x {base}")
    else:
        print(f"No variant is faster than its baseline by {NOTABLE:.0%} or more.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated MxNxK or BbMxNxK")
    p.add_argument("--transposes", default="NN,NT,TN")
    p.add_argument("--precisions", default="fp32,tf32,fp16")
    p.add_argument("--configs", default="small,large", help="DML configs: small, large")
    p.add_argument("--peers", type=int, default=2)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=10, help="GEMM warm-up calls")
    p.add_argument("--iters", type=int, default=50, help="GEMM samples")
    p.add_argument("--target-ms", type=float, default=1.0, help="GEMM sample length (calls per sample adapt)")
    p.add_argument("--dml-warmup", type=int, default=10)
    p.add_argument("--dml-iters", type=int, default=50)
    p.add_argument("--dml-tf32", action="store_true", help="also time the DML step with TF32 on")
    p.add_argument("--skip-gemm", action="store_true")
    p.add_argument("--skip-dml", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", metavar="OUT", help="write the PyTorch results here")
    p.add_argument("--cohort-json", metavar="FILE", nargs="+", default=[],
                   help="cohort results to compare with (several: run_gpu.sh's variants)")
    p.add_argument("--targets", action="store_true",
                   help="print issue 4's targets against every --cohort-json file")
    p.add_argument("--variants", action="store_true",
                   help="compare the --cohort-json files measure by measure (run_gpu.sh's A/B variants)")
    p.add_argument("--from-json", metavar="FILE", help="load PyTorch results instead of measuring")
    p.add_argument("--no-pytorch", action="store_true",
                   help="with --targets: no PyTorch results (none measured, or the run was cut short); "
                        "the absolute goals and the issue's 5.5 ms are judged, the shares are not")
    args = p.parse_args(argv)
    if args.iters < 1 or args.dml_iters < 1:
        sys.exit("--iters and --dml-iters must be at least 1")

    cohorts = []
    for path in args.cohort_json:
        with open(path) as f:
            cohorts.append((cohort_label(path), json.load(f)))
    if args.variants and not args.from_json:
        # cohort's files against each other: no PyTorch results needed.
        if len(cohorts) < 2:
            sys.exit("--variants compares two or more --cohort-json files")
        print_variants(cohorts)
        return
    if args.no_pytorch:
        if args.from_json or args.json or not args.targets:
            sys.exit("--no-pytorch judges --targets on the cohort files alone (no --from-json, no --json)")
        result = None
    elif args.from_json:
        with open(args.from_json) as f:
            result = json.load(f)
    else:
        try:
            import torch
        except ImportError:
            sys.exit("PyTorch is not installed (pip install torch); use --from-json to only compare")
        cuda = on_cuda(args.device)
        if cuda and not torch.cuda.is_available():
            sys.exit("no CUDA device (torch.cuda.is_available() is False); --device cpu is a dry run")
        if not cuda and args.device != "cpu":
            sys.exit(f"unknown --device '{args.device}' (cuda, cuda:N, or cpu for a dry run)")
        if cuda and torch.device(args.device).index is not None:
            torch.cuda.set_device(torch.device(args.device))
        result = {
            "source": "pytorch",
            "device": torch.cuda.get_device_name() if cuda else "cpu (dry run, host timing)",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "driver": driver_version() if cuda else None,
            "settings": {
                "warmup": args.warmup,
                "iters": args.iters,
                "target_ms": args.target_ms,
                "dml_warmup": args.dml_warmup,
                "dml_iters": args.dml_iters,
                "peers": args.peers,
                "alpha": args.alpha,
                "temperature": args.temperature,
                "lr": args.lr,
                "momentum": 0.9,
                "fp16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
            },
        }
        result["measures"] = SavedMeasures(lambda: args.json and write_json(args.json, result))
        print(f"PyTorch {result['torch']} on {result['device']} (CUDA {result['cuda']}, driver {result['driver']})", flush=True)
        if not args.skip_gemm:
            print("GEMM (torch.matmul -> cuBLAS):", flush=True)
            bench_gemm(torch, args, result["measures"])
        if not args.skip_dml:
            print(f"DML step ({args.peers} peers, SGD momentum 0.9, alpha {args.alpha}, T {args.temperature}):", flush=True)
            bench_dml(torch, args, result["measures"])

    if result is not None:
        print_table(result)
    if args.json and result is not None:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    for label, cohort in cohorts if result is not None else []:
        if len(cohorts) > 1:
            print(f"\n[{label}]")
        print_comparison(result, cohort)
    if args.targets:
        print_targets(result, cohorts)
    if args.variants:
        print_variants(cohorts)


if __name__ == "__main__":
    main()
