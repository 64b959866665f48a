"""Assemble ``benchmarks/README.md`` from the tables the benchmark scripts wrote.

Every ``bench_*.py`` writes ``results/<name>.json`` and ``results/<name>.md``; this script
puts the markdown tables together, in a fixed order, under the introduction below. Run
it after any benchmark:

    python benchmarks/make_readme.py
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

SECTIONS = [
    ("cmf", "CMF against cmfrec on MovieLens-100K", "bench_cmf.py"),
    ("cmf_implicit", "CMF implicit-feedback ALS against implicit (benfred)",
     "bench_cmf.py --part implicit"),
    ("dfmf", "DFMF against scikit-fusion and CMF on dicty", "bench_dfmf.py"),
    ("dfmf_graph", "DFMF against scikit-fusion on a six-type sparse fusion graph",
     "bench_dfmf_graph.py"),
    ("dfmf_graph_large", "DFMF against scikit-fusion on a larger, sparser six-type graph",
     "bench_dfmf_graph.py --scale 2 --density 0.002"),
    ("dcmf", "DCMF against CMF and cmfrec", "bench_dcmf.py"),
    ("dcmf_epoch", "DCMF and MMEDA: the cost of one training epoch", "bench_dcmf.py --part epoch"),
    ("dcmf_log", "DCMF: what was tried against overfitting the ratings (log)", "bench_dcmf.py"),
    ("mmeda", "MMEDA: the paper's model development on mfeat", "bench_mmeda.py"),
    ("representations", "Representations probed downstream: mmfactor against multiview peers",
     "bench_representations.py"),
    ("hyperlearn", "HyperLearn on MovieLens-100K and tensorly's tensors", "bench_hyperlearn.py"),
    ("hyperlearn_scaling", "HyperLearn scaling in the number of hyperedges",
     "bench_hyperlearn.py"),
    ("sparse_cp", "Sparse CP-ALS at scale: HyperLearn against pyttb", "bench_sparse_cp.py"),
    ("sparse_cp_1e7", "Sparse CP-ALS at 10^7 hyperedges: HyperLearn against pyttb",
     "bench_sparse_cp.py"),
    ("hypergraph", "HyperLearn on a real hypergraph: tag recommendation on Last.fm",
     "bench_hypergraph.py"),
    ("hypergraph_seeds", "Last.fm tag recommendation: spread over seeds",
     "bench_hypergraph.py"),
    ("scale", "Scale: 10^7 ratings, modes as ranks, peak memory", "bench_scale.py"),
    ("regression", "The regression task: user age from MovieLens embeddings",
     "bench_regression.py"),
    ("weights", "CMF and DFMF: weights=None against \"balanced\" on mfeat view pairs",
     "bench_weights.py --part weights"),
    ("dtype", "DFMF: float32 against float64, torch against NumPy",
     "bench_weights.py --part dtype"),
    ("threads", "Threads on a busy machine: fits at a background load of 4",
     "bench_threads.py"),
    ("threads_load12", "Threads on a busy machine: fits at a background load of 12",
     "bench_threads.py --load 12"),
    ("threads_commands", "Threads on a busy machine: whole commands (the main job, the docs "
     "build, the MMEDA gallery example)", "bench_threads.py --commands"),
    ("gpu_cuda", "GPU check on a CUDA device", "gpu_check.sh"),
    ("gpu_cpu", "GPU check: its CPU path (tiny sizes, `--device cpu`)", "gpu_check.sh"),
]

INTRO = """# Benchmarks

Each script measures mmfactor beside its peers in the same run, on the same machine, and
writes its figures to `results/<name>.json` and a table to `results/<name>.md`; this page
is assembled from those tables by `python benchmarks/make_readme.py`. Each table says the
machine and the command that produced it. Install the peers with the `bench` extra
(`pip install -e ".[bench]"`); the data sets are read from the cache
(`MMFACTOR_DATA`, see the `fetch_*` loaders).

Timings are the best of several runs (as `timeit` reports them). Unless a table says
otherwise, they come from the project's 2-core CPU machine.
"""


def main():
    parts = [INTRO]
    known = {name for name, _, _ in SECTIONS}
    extra = sorted(p.stem for p in (HERE / "results").glob("*.md") if p.stem not in known)
    for name, title, script in SECTIONS + [(n, f"Further run: {n}", None) for n in extra]:
        md = HERE / "results" / f"{name}.md"
        if md.exists():
            text = md.read_text().strip()
            if script is None:  # the script is named in the run's own "Command:" line
                found = re.search(r"python (benchmarks/\S+\.py)", text)
                script = found.group(1).split("/")[-1] if found else None
            source = f"Script: `benchmarks/{script}`." if script else "Scripts: see the text."
            parts.append(f"## {title}\n\n{source}\n\n{text}\n")
        else:
            parts.append(f"## {title}\n\nNot measured yet: run `benchmarks/{script}`.\n")
    reliability = HERE / "RELIABILITY.md"
    if reliability.exists():
        parts.append("## Reliability\n\nSee [RELIABILITY.md](RELIABILITY.md).\n")
    (HERE / "README.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
