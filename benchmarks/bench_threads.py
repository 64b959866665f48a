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

``--commands`` measures whole commands instead, the issue's other rows, each in its own
run of this script (so that each stays short under the exclusive lock):

* ``main``: the README's main job, ``python -m mmfactor --output DIR`` (all models, its
  default seeds, threads and jobs);
* ``docs``: the docs build with the gallery executed, as the README builds it
  (``python -m sphinx -W --keep-going -b html docs DIR``, the gallery's previous outputs
  removed first so that every example runs);
* ``mmeda-example``: the MMEDA gallery example, ``examples/mmeda/plot_mmeda_mfeat.py``,
  run as a script.

Each command runs under the background load, first with the default (spin-waiting)
OpenMP policy, stopped after ``--cap`` seconds if it has not finished (the table then
says "> cap (stopped)" and the ratio is a lower bound), then with
``OMP_WAIT_POLICY=PASSIVE`` (stopped after ``--timeout`` seconds). The load average is
sampled every 5 s during each run. The scores the command prints or writes are compared
between the two policies. Results of several runs of this script are merged into
``results/threads_commands.json`` / ``.md`` (one entry per command and policy; a new run
replaces the entry it measures)::

    /tmp/alone python benchmarks/bench_threads.py --commands mmeda-example --load 12
    /tmp/alone python benchmarks/bench_threads.py --commands main --policies default
    /tmp/alone python benchmarks/bench_threads.py --commands main --policies passive
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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


# ---- whole commands (--commands) -------------------------------------------------------

ROOT = HERE.parent
GALLERY_OUTPUTS = ["docs/auto_examples", "docs/gen_modules", "docs/sg_execution_times.rst"]
# a score printed by a gallery example (times stripped, so that only the scores compare)
SCORE_LINE = re.compile(r"macro-F1|RMSE|AUC|ARI|accuracy|MSE|best:")
SECONDS = re.compile(r"\d+(\.\d+)? s\b")


def _main_job(tmp):
    out = Path(tmp) / "mmfactor_output"
    return [sys.executable, "-m", "mmfactor", "--output", str(out)], lambda log: (
        _main_job_scores(out))


def _main_job_scores(out):
    result = out / "results.json"
    if not result.exists():
        return None
    runs = json.loads(result.read_text())["runs"]
    return [[r["model"], r.get("seed"), r["macro_f1"], r["accuracy"]] for r in runs]


def _docs(tmp):
    for rel in GALLERY_OUTPUTS:  # so that every gallery example runs again
        path = ROOT / rel
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
            missing_ok=True)
    argv = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs",
            str(Path(tmp) / "html")]
    return argv, lambda log: _gallery_scores()


def _gallery_scores():
    pages = sorted((ROOT / "docs" / "auto_examples").rglob("*.rst"))
    lines = [f"{p.stem}: {SECONDS.sub('', line).strip()}" for p in pages
             for line in p.read_text().splitlines() if SCORE_LINE.search(line)
             and "sphx-glr" not in line]
    return lines or None


def _mmeda_example(tmp):
    argv = [sys.executable, str(ROOT / "examples" / "mmeda" / "plot_mmeda_mfeat.py")]
    return argv, lambda log: [line for line in log.splitlines() if "macro-F1" in line] or None


COMMANDS = {
    # key: (label in the table, how to make it (argv, scores from the output), a line of
    # its output that marks progress: the times at which each run reached them compare
    # two runs over the part both completed, even when one was stopped)
    "main": ("`mmfactor --output DIR` (the README's main job: all models, seeds 0 1 2)",
             _main_job, (r"seed \d+: fit ", "fits")),
    "docs": ("docs build with the gallery executed (`python -m sphinx -W --keep-going -b "
             "html docs DIR`)", _docs, (r"generating gallery for .*\] plot_", "examples started")),
    "mmeda-example": ("MMEDA gallery example (`examples/mmeda/plot_mmeda_mfeat.py`)",
                      _mmeda_example, (None, None)),
}

POLICIES = {"default": None, "passive": "PASSIVE"}


class LoadSampler(threading.Thread):
    """The 1-minute load average every ``every`` seconds until stopped."""

    def __init__(self, every=5.0):
        super().__init__(daemon=True)
        self.every, self.samples, self._stop_event = every, [], threading.Event()

    def run(self):
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop_event.wait(self.every):
                return

    def stop(self):
        self._stop_event.set()
        self.join()
        self.samples.append(os.getloadavg()[0])
        s = self.samples
        return {"mean": sum(s) / len(s), "min": min(s), "max": max(s)}


def run_command(key, policy, cap):
    """Run one command under ``policy``; stop it (its whole process group) after ``cap``
    seconds. Wall and CPU seconds (user + system of the command and the descendants it
    waited for), whether it was stopped, its scores, the load average during it."""
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        argv, scores = COMMANDS[key][1](tmp)
        env = _child_env(policy)
        env["MPLBACKEND"] = "Agg"
        env.pop("TQDM_DISABLE")  # the command as a user runs it
        mark = re.compile(COMMANDS[key][2][0]) if COMMANDS[key][2][0] else None
        lines, milestones = [], []
        sampler = LoadSampler()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        sampler.start()
        # its own process group (to stop it whole), the same session as the load: a new
        # session would be a new scheduler autogroup, shielded from the load
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, process_group=0, text=True,
                                errors="replace")

        def read():
            for line in proc.stdout:
                lines.append(line)
                if mark and mark.search(line):
                    milestones.append([time.perf_counter() - t0, line.strip()[:120]])

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            rc, stopped = proc.wait(timeout=cap), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, stopped = proc.wait(), True
        wall = time.perf_counter() - t0
        reader.join(timeout=10)
        load = sampler.stop()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        text = "".join(lines)
        if rc != 0 and not stopped:
            raise RuntimeError(f"{argv} failed (exit {rc}):\n{text[-3000:]}")
        return {"wall_s": wall, "cpu_s": (r1.ru_utime - r0.ru_utime)
                + (r1.ru_stime - r0.ru_stime), "stopped": stopped, "cap_s": cap,
                "scores": None if stopped else scores(text), "loadavg": load,
                "milestones": milestones, "log_tail": text[-1500:],
                "argv": [_shown(a, tmp) for a in argv]}


def _shown(arg, tmp):
    """An argument as the table shows it: ``python``, paths from the repository root."""
    if arg == sys.executable:
        return "python"
    return arg.replace(tmp, "$TMP").replace(str(ROOT) + os.sep, "")


def _minutes(s):
    return f"{int(s // 60)} min {s % 60:.0f} s" if s >= 60 else f"{s:.1f} s"


def commands_markdown(result):
    lines = [
        f"Machine: {result['machine']}. Each row is its own run of "
        "`python benchmarks/bench_threads.py --commands ...` under the exclusive lock "
        "(`/tmp/alone`: nothing else heavy ran), the command given in the row's first "
        "column. Background load: the row's number of processes spinning on the CPU, "
        "started by the script before the command and stopped after it; `load avg` = "
        "the 1-minute load average sampled every 5 s during the run (mean, [min-max]; it "
        "lags behind a load started seconds before, so it starts low). Default = "
        "torch's default threads with OpenMP's default (spin-waiting) policy; passive = "
        "`OMP_WAIT_POLICY=PASSIVE`, otherwise the same. A default run still going after "
        "its cap was **stopped**: its time is written \"> cap (stopped)\" and the ratio "
        "is a lower bound. CPU = user + system seconds of the command and the processes "
        "it waited for (not given for a stopped run). Same scores = "
        "the scores the command wrote (main job: every fit's macro-F1 and accuracy; "
        "gallery: the score lines the examples print, times removed) are identical "
        "under both policies.",
        "",
        "| run | background load | default: wall | CPU (s) | load avg | passive: wall "
        "| CPU (s) | load avg | default / passive | same scores |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for key, (label, _, _) in COMMANDS.items():
        row = result["results"].get(key)
        if not row:
            continue
        cells = [label]
        d, p = row.get("default"), row.get("passive")
        cells.append(", ".join(sorted({str(r["load"]) for r in (d, p) if r})))
        for r in (d, p):
            if r is None:
                cells += ["not run", "", ""]
                continue
            wall = _minutes(r["wall_s"])
            cells += [f"> {_minutes(r['cap_s'])} (stopped)" if r["stopped"] else wall,
                      "(stopped)" if r["stopped"] else f"{r['cpu_s']:.0f}",
                      f"{r['loadavg']['mean']:.1f} [{r['loadavg']['min']:.1f}-"
                      f"{r['loadavg']['max']:.1f}]"]
        if d and p and not p["stopped"]:
            ratio = d["wall_s"] / p["wall_s"]
            cells.append(f"≥ {ratio:.1f}x (lower bound)" if d["stopped"] else f"{ratio:.1f}x")
        else:
            cells.append("none: the passive run was stopped" if p and p["stopped"] else "")
        if d and p and d["scores"] is not None and p["scores"] is not None:
            cells.append("yes" if d["scores"] == p["scores"] else "**no**")
        else:
            cells.append("not compared (a run was stopped)" if d and p else "")
        lines.append("| " + " | ".join(cells) + " |")
    missing = [f"- {COMMANDS[k][0]}: **not measured**. "
               + result.get("not_measured", {}).get(k, f"Run `--commands {k}`.")
               for k in COMMANDS if k not in result["results"]]
    if missing:
        lines += ["", *missing]
    prefix = [_prefix_line(key, row) for key, row in result["results"].items()]
    if any(prefix):
        lines += ["", "Over the part of a command both runs completed (progress lines "
                  "of its output, timed as they appeared), when a run was stopped:", "",
                  *[p for p in prefix if p]]
    lines += ["", "When each run started (UTC), the load average before it:", ""]
    for key in COMMANDS:
        for pol, r in result["results"].get(key, {}).items():
            lines.append(f"- {key}, {pol}: {r['when']}, load average before "
                         f"{r['loadavg_before']}, command `{' '.join(r['argv'])}`")
    return "\n".join(lines) + "\n"


def _prefix_line(key, row):
    """Both runs' times to the furthest progress line both reached (a stopped run)."""
    d, p = row.get("default"), row.get("passive")
    unit = COMMANDS[key][2][1]
    if not (d and p and unit and (d["stopped"] or p["stopped"])):
        return None
    n = min(len(d["milestones"]), len(p["milestones"]))
    if n == 0:
        return (f"- {key}: no progress line was reached by both runs ({unit}: default "
                f"{len(d['milestones'])}, passive {len(p['milestones'])}).")
    td, tp = d["milestones"][n - 1][0], p["milestones"][n - 1][0]
    # what each progress line reports, its seconds removed, by what comes before ":"
    # (main job: "MODEL seed S: fit ... s, test macro-F1 X")
    said = [{" ".join(label.split(":")[0].split()):
             SECONDS.sub("", label) for _, label in r["milestones"]} for r in (d, p)]
    both = sorted(set(said[0]) & set(said[1]))
    same = all(" ".join(said[0][k].split()) == " ".join(said[1][k].split()) for k in both)
    return (f"- {key}: the first {n} {unit}: default {_minutes(td)}, passive "
            f"{_minutes(tp)}, {td / tp:.1f}x (default reached {len(d['milestones'])}, "
            f"passive {len(p['milestones'])}); what both printed for the {len(both)} "
            f"{unit} both finished ({', '.join(both)}) is "
            f"{'identical' if same else '**different**'}.")


def main_commands(args):
    out = Path(args.output if args.output != str(HERE / "results" / "threads")
               else HERE / "results" / "threads_commands")
    path = out.with_suffix(".json")
    result = (json.loads(path.read_text()) if path.exists()
              else {"results": {}})
    result["machine"] = (f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} CPUs, {platform.system()}")
    for key in args.commands if args.why_not else []:
        result.setdefault("not_measured", {})[key] = args.why_not
    for key in [] if args.render or args.why_not else args.commands:
        for pol in args.policies:
            cap = args.cap if pol == "default" else args.timeout
            before = " ".join(f"{x:.2f}" for x in os.getloadavg())
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            with BackgroundLoad(args.load):
                r = run_command(key, POLICIES[pol], cap)
            r.update(load=args.load, loadavg_before=before, when=when)
            result["results"].setdefault(key, {})[pol] = r
            result.get("not_measured", {}).pop(key, None)
            print(f"{key:<14} {pol:<8} {r['wall_s']:8.1f} s wall {r['cpu_s']:8.1f} s CPU "
                  f"stopped={r['stopped']} load {r['loadavg']}", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2))  # after every run: kept if stopped
    out.with_suffix(".md").write_text(commands_markdown(result))
    print(commands_markdown(result))


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
    p.add_argument("--commands", nargs="+", choices=list(COMMANDS), default=None,
                   help="measure these whole commands instead of the fits")
    p.add_argument("--policies", nargs="+", choices=list(POLICIES),
                   default=list(POLICIES), help="with --commands: the OpenMP policies")
    p.add_argument("--cap", type=float, default=330,
                   help="with --commands: seconds after which a default-policy run is "
                        "stopped (reported as '> cap (stopped)')")
    p.add_argument("--why-not", default=None, metavar="TEXT",
                   help="with --commands: record why these commands were not measured "
                        "(the table says so), run nothing")
    p.add_argument("--render", action="store_true",
                   help="with --commands: rewrite the table from the JSON, run nothing")
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("--device: this benchmark measures CPU threads; use --device cpu")
    if args.commands:
        return main_commands(args)
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
