#!/usr/bin/env python3
"""Times a full training step (forward, backward, SGD update) of the same nets, batches and
thread counts in PyTorch and in Poseidon, interleaved in one run, and prints medians and ratios.

Poseidon's side is the Google Benchmark binary poseidon_bench_train (benchmarks/bench_train.cpp);
PyTorch's side is built here with the same layers and Caffe's rounding (ceil-mode pooling).
Needs PyTorch (Debian: python3-torch). Usage:

    benchmarks/compare_pytorch.py [--bench build/benchmarks/poseidon_bench_train] [--rounds 3]
                                  [--only lenet,cifar10_quick,alexnet] [--markdown]
                                  [--baseline another/poseidon_bench_train]

--baseline times a second build of the benchmark (say, of the code before a change) in the same
interleaved rounds, and adds its times and the ratio new / baseline to the table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torch.nn as nn
except ImportError:
    sys.exit("compare_pytorch.py needs PyTorch: apt-get install python3-torch (then run with /usr/bin/python3)")

from torch_nets import make_nets


NETS = make_nets(nn)
CONFIGS = [("lenet", 64, 1), ("lenet", 64, 2), ("cifar10_quick", 100, 1), ("cifar10_quick", 100, 2),
           ("alexnet", 8, 2), ("alexnet", 32, 2), ("alexnet", 8, 1), ("alexnet", 32, 1)]


def torch_step_ms(name, batch, threads, seconds):
    """Median milliseconds per training step over about `seconds` of steps."""
    torch.set_num_threads(threads)
    make, shape, classes = NETS[name]
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 200):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ours_step_ms(bench, name, batch, threads, seconds):
    flt = f"^BM_train_step/{name}/{batch}/{threads}/"
    out = subprocess.run([bench, f"--benchmark_filter={flt}", "--benchmark_format=json",
                          f"--benchmark_min_time={seconds}"],
                         check=True, capture_output=True, text=True).stdout
    runs = [b for b in json.loads(out)["benchmarks"] if b.get("run_type") == "iteration"]
    if not runs:
        raise SystemExit(f"{bench} ran no benchmark matching {flt}")
    unit = {"ms": 1.0, "us": 1e-3, "ns": 1e-6, "s": 1e3}[runs[0]["time_unit"]]
    return runs[0]["real_time"] * unit


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(here, "..", "build", "benchmarks", "poseidon_bench_train"))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per configuration (medians are reported)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--only", default="", help="comma-separated net names")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--baseline", default="", help="a second poseidon_bench_train to time alongside (before/after)")
    args = ap.parse_args()
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"{args.bench} not found: build it first (cmake --build build --target poseidon_bench_train)")
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only.split(",")]
    if args.baseline and not os.access(args.baseline, os.X_OK):
        sys.exit(f"{args.baseline} not found")
    ours = {c: [] for c in configs}
    theirs = {c: [] for c in configs}
    base = {c: [] for c in configs}
    print(f"PyTorch {torch.__version__}; {args.rounds} interleaved rounds of ~{args.seconds} s per side", file=sys.stderr)
    for r in range(args.rounds):
        for c in configs:
            # Alternate which side goes first so that neither always runs on a warmer machine.
            sides = [("torch", theirs), ("ours", ours)] + ([("base", base)] if args.baseline else [])
            if r % 2:
                sides.reverse()
            for side, store in sides:
                if side == "torch":
                    ms = torch_step_ms(*c, args.seconds)
                else:
                    ms = ours_step_ms(args.bench if side == "ours" else args.baseline, *c, args.seconds)
                store[c].append(ms)
            extra = f", baseline {base[c][-1]:.1f} ms" if args.baseline else ""
            print(f"round {r + 1}: {c[0]} B{c[1]} T{c[2]}: ours {ours[c][-1]:.1f} ms, PyTorch {theirs[c][-1]:.1f} ms{extra}",
                  file=sys.stderr)
    rows = []
    for c in configs:
        o, t = statistics.median(ours[c]), statistics.median(theirs[c])
        b = statistics.median(base[c]) if args.baseline else None
        rows.append((f"{c[0]} B{c[1]}", c[2], o, t, o / t, b))
    if args.markdown:
        head = "| net | threads | Poseidon ms/step | PyTorch ms/step | ratio (Poseidon / PyTorch) |"
        print(head + (" baseline ms/step | baseline / PyTorch | Poseidon / baseline |" if args.baseline else ""))
        print("|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if args.baseline else ""))
        for n, th, o, t, ratio, b in rows:
            extra = f" {b:.1f} | {b / t:.2f} | {o / b:.2f} |" if b is not None else ""
            print(f"| {n} | {th} | {o:.1f} | {t:.1f} | {ratio:.2f} |{extra}")
    else:
        extra = f"{'baseline ms':>14}{'base/PT':>9}{'new/base':>9}" if args.baseline else ""
        print(f"{'net':<20}{'threads':>8}{'Poseidon ms':>14}{'PyTorch ms':>14}{'ratio':>8}{extra}")
        for n, th, o, t, ratio, b in rows:
            extra = f"{b:>14.1f}{b / t:>9.2f}{o / b:>9.2f}" if b is not None else ""
            print(f"{n:<20}{th:>8}{o:>14.1f}{t:>14.1f}{ratio:>8.2f}{extra}")


if __name__ == "__main__":
    main()
