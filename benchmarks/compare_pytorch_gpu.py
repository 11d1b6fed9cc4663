#!/usr/bin/env python3
"""Times a full training step (forward, backward, SGD momentum update) of the same nets and batches
on the GPU in PyTorch (CUDA, cudnn.benchmark=True) and in Poseidon, interleaved in one run, and
prints medians and ratios. The GPU counterpart of compare_pytorch.py.

Poseidon's side is the Google Benchmark binary poseidon_cuda_bench_train (benchmarks/cuda_bench_train.cu,
built with -DPOSEIDON_WITH_CUDA=ON); PyTorch's side is built here with the same layers and Caffe's
rounding (ceil-mode pooling). Both sides synchronise the device after every step and time it on the
wall clock. Needs PyTorch with CUDA. Usage:

    benchmarks/compare_pytorch_gpu.py [--bench build/benchmarks/poseidon_cuda_bench_train] [--rounds 3]
                                      [--seconds 2] [--only lenet,cifar10_quick,alexnet] [--device 0]
                                      [--torch-tf32] [--markdown]

The goal this checks: our AlexNet step takes no longer than PyTorch's (ratio <= 1).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from torch_nets import make_nets

CONFIGS = [("lenet", 64), ("cifar10_quick", 100), ("alexnet", 128), ("alexnet", 256)]


def parse_args(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(here, "..", "build", "benchmarks", "poseidon_cuda_bench_train"),
                    help="the poseidon_cuda_bench_train binary")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per configuration (medians are reported)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--only", default="", help="comma-separated net names (lenet, cifar10_quick, alexnet)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index for both sides")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--torch-tf32", action="store_true",
                    help="let PyTorch's convolutions use TF32 tensor cores (its default); without it both sides "
                         "compute in FP32, as Poseidon's layers do by default")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if not args.seconds > 0:
        ap.error("--seconds must be positive")
    known = {name for name, _ in CONFIGS}
    unknown = [n for n in args.only.split(",") if n and n not in known]
    if unknown:
        ap.error(f"--only: unknown net(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return args


def require_torch_cuda(device):
    """Imports torch and checks it can use CUDA device `device`; exits with the reason otherwise."""
    try:
        import torch
    except ImportError:
        sys.exit("compare_pytorch_gpu.py needs PyTorch with CUDA (pip install torch with a CUDA build); "
                 "torch is not installed for " + sys.executable)
    if not torch.cuda.is_available():
        built = getattr(torch.version, "cuda", None)
        why = "this torch was built without CUDA" if not built else f"torch (CUDA {built}) sees no CUDA device"
        sys.exit(f"compare_pytorch_gpu.py needs a GPU: {why} (torch {torch.__version__}); "
                 "use compare_pytorch.py for the CPU comparison")
    if device >= torch.cuda.device_count():
        sys.exit(f"--device {device}: torch sees only {torch.cuda.device_count()} CUDA device(s)")
    return torch


def torch_step_ms(torch, nets, device, name, batch, seconds):
    """Median milliseconds per training step (synchronised) over about `seconds` of steps."""
    nn = torch.nn
    make, shape, classes = nets[name]
    dev = torch.device("cuda", device)
    torch.manual_seed(0)
    model = make().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(batch, *shape, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()
        torch.cuda.synchronize(dev)

    for _ in range(3):  # cudnn.benchmark picks its algorithms on the first passes
        step()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < seconds and len(times) < 500):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    del model, opt, x, y
    torch.cuda.empty_cache()  # leave the memory to our binary, which runs next
    return statistics.median(times)


def ours_step_ms(bench, device, name, batch, seconds):
    flt = f"^BM_train_step/{name}/{batch}(/|$)"
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "out.json")
        env = dict(os.environ, POSEIDON_BENCH_DEVICE=str(device))
        proc = subprocess.run([bench, f"--benchmark_filter={flt}", f"--benchmark_min_time={seconds}",
                               f"--benchmark_out={out_file}", "--benchmark_out_format=json"],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"{bench} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        if "no CUDA device available" in proc.stdout + proc.stderr:
            sys.exit(f"{bench} found no CUDA device, though torch did: check CUDA_VISIBLE_DEVICES and the driver")
        if not os.path.exists(out_file):
            sys.exit(f"{bench} wrote no results:\n{proc.stdout}{proc.stderr}")
        with open(out_file) as f:
            report = json.load(f)
    runs = [b for b in report["benchmarks"] if b.get("run_type") == "iteration"]
    if not runs:
        sys.exit(f"{bench} ran no benchmark matching {flt}")
    if runs[0].get("error_occurred"):
        sys.exit(f"{bench}: {name} B{batch} failed: {runs[0].get('error_message', '?')}")
    unit = {"ms": 1.0, "us": 1e-3, "ns": 1e-6, "s": 1e3}[runs[0]["time_unit"]]
    return runs[0]["real_time"] * unit


def main(argv=None):
    args = parse_args(argv)
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"{args.bench} not found: configure with -DPOSEIDON_WITH_CUDA=ON and build it first "
                 "(cmake --build build --target poseidon_cuda_bench_train), or pass --bench")
    torch = require_torch_cuda(args.device)
    torch.backends.cudnn.benchmark = True
    # Same arithmetic on both sides: Poseidon's cuDNN convolutions and cuBLAS GEMMs are FP32 (FMA)
    # unless told otherwise, while PyTorch lets cuDNN use TF32 by default.
    torch.backends.cudnn.allow_tf32 = args.torch_tf32
    torch.backends.cuda.matmul.allow_tf32 = args.torch_tf32
    nets = make_nets(torch.nn)
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only.split(",")]
    ours = {c: [] for c in configs}
    theirs = {c: [] for c in configs}
    print(f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}) on "
          f"{torch.cuda.get_device_name(args.device)}, TF32 {'allowed' if args.torch_tf32 else 'off'}; "
          f"{args.rounds} interleaved rounds of ~{args.seconds} s per side",
          file=sys.stderr)
    for r in range(args.rounds):
        for c in configs:
            # Alternate which side goes first so that neither always runs on a warmer GPU.
            sides = [("torch", theirs), ("ours", ours)] if r % 2 == 0 else [("ours", ours), ("torch", theirs)]
            for side, store in sides:
                if side == "torch":
                    store[c].append(torch_step_ms(torch, nets, args.device, *c, args.seconds))
                else:
                    store[c].append(ours_step_ms(args.bench, args.device, *c, args.seconds))
            print(f"round {r + 1}: {c[0]} B{c[1]}: ours {ours[c][-1]:.2f} ms, PyTorch {theirs[c][-1]:.2f} ms",
                  file=sys.stderr)
    rows = []
    for c in configs:
        o, t = statistics.median(ours[c]), statistics.median(theirs[c])
        rows.append((f"{c[0]} B{c[1]}", o, t, o / t))
    if args.markdown:
        print("| net | Poseidon ms/step | PyTorch ms/step | ratio (Poseidon / PyTorch) |")
        print("|---|---:|---:|---:|")
        for n, o, t, ratio in rows:
            print(f"| {n} | {o:.2f} | {t:.2f} | {ratio:.2f} |")
    else:
        print(f"{'net':<20}{'Poseidon ms':>14}{'PyTorch ms':>14}{'ratio':>8}")
        for n, o, t, ratio in rows:
            print(f"{n:<20}{o:>14.2f}{t:>14.2f}{ratio:>8.2f}")
    alex = [(n, ratio) for n, _, _, ratio in rows if n.startswith("alexnet")]
    if alex:
        met = all(ratio <= 1.0 for _, ratio in alex)
        detail = ", ".join(f"{n} {ratio:.2f}" for n, ratio in alex)
        print(f"\nGoal: our AlexNet step <= PyTorch's: {'met' if met else 'NOT met'} (ratios {detail})")


if __name__ == "__main__":
    main()
