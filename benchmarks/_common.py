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
