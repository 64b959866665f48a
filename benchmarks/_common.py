"""Helpers shared by the benchmark scripts: the machine, timing, JSON and markdown output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine():
    """A short description of the machine the benchmark ran on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def timed(fn, repeat=3):
    """``(result of the last call, best wall time in seconds)`` over ``repeat`` calls.

    The minimum, as ``timeit`` reports it: the least disturbed run of the same work.
    """
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


def loadavg():
    """The 1, 5 and 15 minute load averages as a string ("n/a" where /proc is absent)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def seed_spread(values):
    """Summary of one score over seeds: mean, sample sd, min, max and the number of seeds.

    Every benchmark that fits a stochastic model reports its scores this way (issue 21):
    the mean over seeds with the spread beside it, so a gap smaller than the spread is not
    read as a win.
    """
    import numpy as np

    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "sd": sd, "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size), "values": v.tolist()}


def fmt_spread(s, digits=3):
    """``0.912 ± 0.008 (n=3)`` from :func:`seed_spread`'s summary (empty for None)."""
    if s is None:
        return ""
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (n=1)"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f} (n={s['n']})"


def command():
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def markdown_table(rows, columns):
    """A markdown table of ``rows`` (dicts) with ``columns`` (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("" if v is None else (fmt.format(v) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(name, payload, markdown, out=None):
    """Write ``results/<name>.json`` and ``results/<name>.md`` (or under ``out``)."""
    folder = Path(out) if out else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "command": command(), **payload}
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float))
    m = payload["machine"]
    header = (
        f"Machine: {m['cpu']} ({m['cpu_count']} cores, torch threads {m['torch_threads']}"
        f"{', GPU ' + m['gpu'] if m['gpu'] else ''}), {m['platform']}, torch {m['torch']}.  \n"
        f"Command: `{payload['command']}`\n\n"
    )
    (folder / f"{name}.md").write_text(header + markdown + "\n")
    return folder
