"""Threads on a busy machine: default threads vs passive threads vs ``n_jobs``.

Re-measures the table of issue 20 at small sizes. Two workloads:

* ``CMF(50)`` on the full digits (``load_mfeat``, six views, 2,000 rows, standardised);
* one MMEDA fit on the digits (MMEDA-I, two views, 10 components, a few epochs).

Each runs in a fresh Python process (OpenMP reads ``OMP_WAIT_POLICY`` when torch is
loaded) in four settings:

* ``idle, default``: no background load, torch's default threads, the default (active)
  OpenMP wait policy;
* ``busy, default``: the same under a background load that this script starts (``--load``
  processes spinning on the CPU) and stops before it exits;
* ``busy, passive``: the same load, ``OMP_WAIT_POLICY=PASSIVE``;
* ``busy, n_jobs=1``: the same load, default wait policy, the estimator's ``n_jobs=1``.

For each: the wall and CPU seconds of the fit (best of ``--repeat`` in one process, after
one warm-up fit of a tiny model), the load average at its end, the threads of the fit,
and a checksum of the
embedding (the same figures in every setting show that the setting changes only time).

    /tmp/alone python benchmarks/bench_threads.py

writes ``results/threads.json`` and ``results/threads.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKLOADS = {
    "CMF(50), full digits": "cmf",
    "MMEDA-I, digits fou+kar": "mmeda",
}

SETTINGS = [
    # name, background load, OMP_WAIT_POLICY, n_jobs
    ("idle, default", False, None, None),
    ("busy, default", True, None, None),
    ("busy, passive", True, "PASSIVE", None),
    ("busy, n_jobs=1", True, None, 1),
]

# the child: fit one workload, print one JSON line
CHILD = r"""
import json, os, resource, sys, time, warnings
import numpy as np
import torch
from mmfactor import CMF, MMEDA
from mmfactor._threads import resolve_n_jobs
from mmfactor.datasets import load_mfeat

workload, n_jobs, repeat = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
warnings.simplefilter("ignore")
if workload == "cmf":
    X, _ = load_mfeat(return_X_y=True)
    views = [v.reshape(len(v), -1) for v in X.views]
    views = [(v - v.mean(0)) / np.where(v.std(0) > 0, v.std(0), 1) for v in views]
    make = lambda: CMF(50, alpha=30.0, max_iter=30, random_state=0, n_jobs=n_jobs)
else:
    X, _ = load_mfeat(views=["fou", "kar"], return_X_y=True)
    views = list(X.views)
    make = lambda: MMEDA(10, variant="I", batch_size=128, max_iter=3, tol=0,
                         random_state=0, n_jobs=n_jobs)
CMF(2, max_iter=2, n_jobs=n_jobs).fit(np.random.RandomState(0).rand(50, 5))  # warm-up
best = None
for _ in range(repeat):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    Z = make().fit_transform(views)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if best is None or wall < best[0]:
        best = (wall, cpu)
print(json.dumps({"wall_s": best[0], "cpu_s": best[1], "loadavg": os.getloadavg()[0],
                  "torch_threads": resolve_n_jobs(n_jobs) or torch.get_num_threads(),
                  "checksum": float(np.abs(Z).sum()), "shape": list(Z.shape)}))
"""

SPIN = "while True: pass"


def _child_env(policy):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    env["TQDM_DISABLE"] = "1"
    return env


class BackgroundLoad:
    """``n`` processes spinning on the CPU, started on entry and killed on exit."""

    def __init__(self, n):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(self.n)]
        time.sleep(2.0)  # let the scheduler see them
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def run_one(workload, policy, n_jobs, repeat, timeout):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, workload, json.dumps(n_jobs), str(repeat)],
        env=_child_env(policy), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(result):
    lines = [
        f"Machine: {result['machine']}. Command: `{result['command']}`. Background load: "
        f"{result['load']} processes spinning on the CPU, started and stopped by the "
        f"script. Load average (1 min) before: {result['loadavg_before']}, after: "
        f"{result['loadavg_after']}. Times: best of {result['repeat']} fits in one "
        "process; CPU = user + system seconds of that process (the background load "
        "excluded): in the busy default rows it includes the idle threads' spinning. "
        "Load avg = the 1-minute load average at the end of the setting (it lags behind a "
        "load started seconds before, so it reads lower than the "
        f"{result['load']} + 1 runnable processes). `checksum` = sum of |embedding|: "
        "equal across settings = same result (MMEDA with one thread differs in the 6th "
        "digit: another summation order).",
        "",
        "| workload | setting | wall (s) | CPU (s) | vs busy default | load avg | "
        "torch threads | checksum |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for wl, rows in result["results"].items():
        ref = rows["busy, default"]["wall_s"]
        for setting, r in rows.items():
            lines.append(
                f"| {wl} | {setting} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                f"{ref / r['wall_s']:.1f}x | {r['loadavg']:.1f} | {r['torch_threads']} | "
                f"{r['checksum']:.6g} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--load", type=int, default=2 * (os.cpu_count() or 2),
                   help="background processes spinning on the CPU (default: 2 per core)")
    p.add_argument("--repeat", type=int, default=2, help="fits per setting (best kept)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS.values()),
                   choices=list(WORKLOADS.values()))
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds allowed per setting before it is recorded as timed out")
    p.add_argument("--device", default="cpu", help="only 'cpu': threads are a CPU matter")
    p.add_argument("--output", default=str(HERE / "results" / "threads"))
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("--device: this benchmark measures CPU threads; use --device cpu")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{platform.system()}",
        "command": "python benchmarks/bench_threads.py " + " ".join(argv or sys.argv[1:]),
        "load": args.load, "repeat": args.repeat,
        "loadavg_before": round(os.getloadavg()[0], 2), "results": {},
    }
    for label, wl in WORKLOADS.items():
        if wl not in args.workloads:
            continue
        rows = {}
        for setting, busy, policy, n_jobs in SETTINGS:
            if busy:
                with BackgroundLoad(args.load):
                    rows[setting] = run_one(wl, policy, n_jobs, args.repeat, args.timeout)
            else:
                rows[setting] = run_one(wl, policy, n_jobs, args.repeat, args.timeout)
            print(f"{label:<28} {setting:<16} {rows[setting]['wall_s']:8.2f} s wall "
                  f"{rows[setting]['cpu_s']:8.2f} s CPU  load {rows[setting]['loadavg']:.1f}",
                  flush=True)
        result["results"][label] = rows
    result["loadavg_after"] = round(os.getloadavg()[0], 2)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
