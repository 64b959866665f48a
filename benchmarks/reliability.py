"""The figures of benchmarks/RELIABILITY.md: bad inputs tried, faults injected, what survived.

Runs, outside pytest, the same tables the reliability tests use (``tests/test_reliability.py``
``BAD_INPUTS`` and the fault injections, ``tests/test_persistence.py``'s attacks,
``tests/test_memory.py``'s subprocess measurement) and records every outcome, then
writes ``results/reliability.json`` and rewrites the tables of ``RELIABILITY.md``.

    python benchmarks/reliability.py              # everything but the 10^6 memory fits
    python benchmarks/reliability.py --memory     # plus CMF and HyperLearn on 10^6 x 10^6
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import test_reliability as R  # noqa: E402
import torch  # noqa: E402
from _common import command, machine, markdown_table  # noqa: E402

import mmfactor  # noqa: E402
from mmfactor._persistence import ModelFormatError  # noqa: E402
from mmfactor._training import (  # noqa: E402
    FitInterruptedWarning,
    FitOutOfMemoryError,
    NonFiniteLossError,
)


class Patch:
    """Replace ``module.fit_loop`` for the duration of a ``with`` block."""

    def __init__(self, name, loop):
        self.module = sys.modules[R.LOOP_MODULES[name]]
        self.loop = loop

    def __enter__(self):
        self.saved = self.module.fit_loop
        self.module.fit_loop = self.loop

    def __exit__(self, *exc):
        self.module.fit_loop = self.saved


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


# ---- bad inputs ------------------------------------------------------------------------


def bad_inputs():
    import re

    rows = []
    for bad in R.BAD_INPUTS:
        for name in bad.only:
            est = R.ESTIMATORS[name]() if bad.method == "fit" else R.fitted(name)
            X, params = bad.make(name)
            est.set_params(**params)
            before = R._copies(X)
            started = []

            def loop(*a, _s=started, **k):
                _s.append(True)
                raise RuntimeError("training started")

            t0 = time.perf_counter()
            with Patch(name, loop):
                try:
                    _quiet(lambda est=est, X=X, m=bad.method:
                           getattr(est, m)(X() if callable(X) else X))
                    exc = None
                except Exception as e:  # noqa: BLE001
                    exc = e
            seconds = time.perf_counter() - t0
            unchanged = R._same(R._copies(X), before)
            # with training started, the stub loop (not fit_loop) decides: not measured
            unfitted = (None if started else
                        bad.method != "fit" or R.fitted_attributes(est) == [])
            if started:
                outcome = "not caught before training"
            elif exc is None:
                outcome = "not caught"
            elif isinstance(exc, bad.exc) and re.search(bad.match, str(exc)):
                outcome = "clear error"
            else:
                outcome = f"unclear error ({type(exc).__name__})"
            rows.append({"estimator": name, "input": bad.id, "method": bad.method,
                         "outcome": outcome, "input_unchanged": unchanged,
                         "left_unfitted": unfitted, "seconds": seconds,
                         "message": None if exc is None else str(exc)[:300],
                         "known_gap": (bad.id, name) in R.KNOWN_GAPS})
    return rows


def equivalents():
    """``EQUIVALENT_INPUTS``: a view in an unusual form (masked, pd.NA, duplicates,
    strides, dtypes) must give the embedding of its plain equivalent, bit for bit."""
    rows = []
    for case, (variant, plain, only) in R.EQUIVALENT_INPUTS.items():
        for name in only:
            b = R.base_views()["b"]
            X = R.MultiModal(a=variant(), b=b)
            before = R._copies(X)
            try:
                Z = _quiet(lambda X=X, name=name: R.ESTIMATORS[name]().fit_transform(X))
                Y = R.MultiModal(a=plain(), b=b)
                ref = _quiet(lambda Y=Y, name=name: R.ESTIMATORS[name]().fit_transform(Y))
                outcome = "same embedding" if np.array_equal(Z, ref) else "different"
            except Exception as e:  # noqa: BLE001
                outcome = f"error ({type(e).__name__}: {str(e)[:80]})"
            rows.append({"input": case, "estimator": name, "outcome": outcome,
                         "input_unchanged": R._same(R._copies(X), before)})
    return rows


# ---- faults ------------------------------------------------------------------------------


def _inject(name, fault, at):
    return Patch(name, R.faulty_loop(fault, at))


_raise = R._raise


def faults():
    rows = []
    for name in R.ESTIMATORS:
        X = R.base_input(name)
        ref = R.ESTIMATORS[name](max_iter=1, tol=0)
        Z_ref = _quiet(lambda ref=ref, X=X: ref.fit_transform(X))

        # Ctrl-C after one complete sweep
        est = R.ESTIMATORS[name](max_iter=3, tol=0)
        with _inject(name, _raise(KeyboardInterrupt()), 1), warnings.catch_warnings(
                record=True) as w:
            warnings.simplefilter("always")
            Z = est.fit_transform(X)
        warned = any(issubclass(x.category, FitInterruptedWarning) for x in w)
        if name == "DFMF":  # its fit_transform is a fold-in of max_iter steps: compare
            Z_ref = ref.set_params(max_iter=3).transform(X)  # with the same max_iter
        rows.append({"estimator": name, "fault": "KeyboardInterrupt after sweep 1",
                     "survived": bool(warned and np.array_equal(Z, Z_ref)
                                      and np.isfinite(est.transform(X)).all()),
                     "state": "fitted with the sweep-1 parameters, warned" if warned else "?"})

        # Ctrl-C during the first sweep
        est = R.ESTIMATORS[name]()
        try:
            with _inject(name, _raise(KeyboardInterrupt()), 0):
                est.fit(X)
            state = "no interrupt?"
        except KeyboardInterrupt:
            state = "unfitted" if R.fitted_attributes(est) == [] else "HALF-FITTED"
        rows.append({"estimator": name, "fault": "KeyboardInterrupt in sweep 1",
                     "survived": state == "unfitted", "state": state})

        for label, fault, exc_type in [
            ("loss becomes NaN (sweep 2)", lambda: {"loss": float("nan")}, NonFiniteLossError),
            ("CUDA out of memory (sweep 2, simulated)",
             _raise(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")),
             FitOutOfMemoryError),
            ("CPU allocation of 128 TiB (sweep 2, real)",
             lambda: torch.empty((2**20, 2**25)), FitOutOfMemoryError),
        ]:
            est = R.ESTIMATORS[name](max_iter=3, tol=0)
            try:
                with _inject(name, fault, 1):
                    _quiet(lambda est=est, X=X: est.fit(X))
                msg, ok = "no error", False
            except exc_type as e:
                msg, ok = str(e), True
            except Exception as e:  # noqa: BLE001
                msg, ok = f"{type(e).__name__}: {e}", False
            unfitted = R.fitted_attributes(est) == []
            rows.append({"estimator": name, "fault": label, "survived": ok and unfitted,
                         "state": ("unfitted" if unfitted else "HALF-FITTED")
                         + f"; {msg.split('. ')[0][:110]}"})
    return rows


def real_interrupts(fractions=(0.25, 0.5, 0.75)):
    """A real asynchronous KeyboardInterrupt at several points of a real fit of each model.

    Each fit runs ``max_iter=20, tol=0`` on 100 rows; a SIGALRM timer whose handler
    raises KeyboardInterrupt, as Python's SIGINT (Ctrl-C) handler does, fires after a
    fraction of the time an undisturbed fit takes. The outcome must be a
    fitted model with a FitInterruptedWarning, an unfitted estimator with the
    KeyboardInterrupt propagated, or (signal after the end) a complete fit.
    """
    import signal

    from sklearn.utils.validation import check_is_fitted

    def ctrl_c(signum, frame):
        raise KeyboardInterrupt  # what Python's default SIGINT handler does

    signal.signal(signal.SIGALRM, ctrl_c)

    rng = np.random.RandomState(0)
    X = R.MultiModal(a=rng.rand(100, 30), b=rng.rand(100, 20))
    rows = []
    for name in R.ESTIMATORS:
        make = lambda name=name: R.ESTIMATORS[name](max_iter=20, tol=0)  # noqa: E731
        t0 = time.perf_counter()
        _quiet(lambda make=make, X=X: make().fit(X))
        full = time.perf_counter() - t0
        for frac in fractions:
            est = make()
            raised = False
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                signal.setitimer(signal.ITIMER_REAL, frac * full)
                try:
                    est.fit(X)
                except KeyboardInterrupt:
                    raised = True
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            warned = any(issubclass(x.category, FitInterruptedWarning) for x in w)
            attrs = R.fitted_attributes(est)
            if raised:
                outcome = "unfitted, KeyboardInterrupt raised" if not attrs else "HALF-FITTED"
            else:
                try:
                    check_is_fitted(est)
                    ok = bool(np.isfinite(est.transform(X)).all())
                except Exception:  # noqa: BLE001
                    ok = False
                outcome = ("fitted, warned" if warned and ok else
                           "fitted, signal after the fit" if ok else "BROKEN")
            rows.append({"estimator": name, "fraction": frac, "seconds_into_fit":
                         frac * full, "n_iter": getattr(est, "n_iter_", None),
                         "outcome": outcome,
                         "survived": outcome not in ("HALF-FITTED", "BROKEN")})
    return rows


# ---- persistence ------------------------------------------------------------------------------


def persistence(tmp):
    rows = []
    for name in R.ESTIMATORS:
        est = R.fitted(name)
        X = R.base_input(name)
        Z = est.transform(X)
        for how in ("pickle", "joblib", "mmfactor.save"):
            path = tmp / f"{name}.{how}"
            t0 = time.perf_counter()
            if how == "pickle":
                path.write_bytes(pickle.dumps(est))
                t1 = time.perf_counter()
                est2 = pickle.loads(path.read_bytes())
            elif how == "joblib":
                joblib.dump(est, path)
                t1 = time.perf_counter()
                est2 = joblib.load(path)
            else:
                mmfactor.save(est, path)
                t1 = time.perf_counter()
                est2 = mmfactor.load(path)
            t2 = time.perf_counter()
            rows.append({"estimator": name, "format": how, "bytes": path.stat().st_size,
                         "save_ms": 1e3 * (t1 - t0), "load_ms": 1e3 * (t2 - t1),
                         "exact": bool(np.array_equal(est2.transform(X), Z))})
    return rows


def attacks(tmp):
    """``tests/test_persistence.py``'s ``ATTACKS`` given to mmfactor.load: each must be
    refused with a clear error; no code from the file may run."""
    import test_persistence as P

    rows = []
    for attack in P.ATTACKS:
        p = P.attack_file(attack, tmp / "attack.mmf")
        size = p.stat().st_size
        t0 = time.perf_counter()
        try:
            mmfactor.load(p, key=attack.key)
            refused, msg = False, "loaded"
        except ModelFormatError as e:
            refused, msg = True, str(e)
        rows.append({"attack": attack.id, "bytes": size, "refused": refused,
                     "load_ms": 1e3 * (time.perf_counter() - t0),
                     "message": msg.replace(str(p), "<file>")[:150]})
    return rows


# ---- memory ------------------------------------------------------------------------------------


def memory():
    import test_memory

    return [test_memory.measure(name, 10**6, 10**5) for name in ("CMF", "HyperLearn")]


# ---- report ------------------------------------------------------------------------------------


def summarize(res):
    bad = res["bad_inputs"]
    ids = sorted({r["input"] for r in bad})
    per = {}
    for r in bad:
        d = per.setdefault(r["estimator"], {"estimator": r["estimator"], "tried": 0,
                                            "clear": 0, "gaps": 0, "unchanged": 0,
                                            "unfitted": 0})
        d["tried"] += 1
        d["clear"] += r["outcome"] == "clear error"
        d["gaps"] += r["outcome"] != "clear error"
        d["unchanged"] += r["input_unchanged"]
        d["unfitted"] += bool(r["left_unfitted"])
    lines = [
        f"**Bad inputs**: {len(ids)} distinct, {len(bad)} (estimator, input) pairs tried; "
        f"{sum(r['outcome'] == 'clear error' for r in bad)} raised the expected error with "
        f"the expected message before training; inputs unchanged in "
        f"{sum(r['input_unchanged'] for r in bad)}/{len(bad)}; estimator left unfitted in "
        f"{sum(bool(r['left_unfitted']) for r in bad)}/"
        f"{sum(r['left_unfitted'] is not None for r in bad)} that failed before training.",
        "",
        markdown_table(list(per.values()), [
            ("estimator", "estimator", None), ("tried", "bad inputs tried", None),
            ("clear", "clear error before training", None), ("gaps", "gaps", None),
            ("unchanged", "input unchanged", None),
            ("unfitted", "left unfitted (caught before training)", None)]),
        "",
    ]
    eq = res.get("equivalents") or []
    if eq:
        cases = {}
        for r in eq:
            d = cases.setdefault(r["input"], {"input": r["input"], "estimators": [],
                                              "same": 0, "unchanged": 0})
            d["estimators"].append(r["estimator"])
            d["same"] += r["outcome"] == "same embedding"
            d["unchanged"] += r["input_unchanged"]
        lines += [
            f"**Equivalent inputs**: {len(eq)} (estimator, input) pairs of a view in an "
            "unusual form against its plain equivalent; "
            f"{sum(r['outcome'] == 'same embedding' for r in eq)} gave the same embedding "
            f"bit for bit, the user's object unchanged in "
            f"{sum(r['input_unchanged'] for r in eq)}.",
            "",
            markdown_table([dict(d, estimators=", ".join(d["estimators"]))
                            for d in cases.values()],
                           [("input", "input", None), ("estimators", "estimators", None),
                            ("same", "same embedding", None),
                            ("unchanged", "input unchanged", None)]),
            "",
        ]
    gaps = [r for r in bad if r["outcome"] != "clear error"]
    lines += ["Gaps (not caught, or not with a clear message): none.", ""] if not gaps else [
        "Gaps (not caught, or not with a clear message):",
        "",
        markdown_table(gaps, [
            ("estimator", "estimator", None), ("input", "bad input", None),
            ("outcome", "outcome", None), ("message", "what happened", None)]),
        "",
    ]
    f = res["faults"]
    lines += [
        f"**Faults**: {len(f)} injected into the training loop, {sum(r['survived'] for r in f)}"
        " survived (a fitted model with the best parameters and a warning, or an unfitted "
        "estimator and a clear error; never half-fitted).",
        "",
        markdown_table(f, [("estimator", "estimator", None), ("fault", "fault", None),
                           ("survived", "survived", None), ("state", "state after", None)]),
        "",
    ]
    ri = res["real_interrupts"]
    lines += [
        f"**Real Ctrl-C**: {len(ri)} asynchronous KeyboardInterrupts (a signal timer, as "
        "Ctrl-C) at 25%, 50% and 75% of a real fit "
        "(`max_iter=20, tol=0`, 100 rows), "
        f"{sum(r['survived'] for r in ri)} survived (never half-fitted or broken).",
        "",
        markdown_table(ri, [("estimator", "estimator", None),
                            ("seconds_into_fit", "signal after (s)", "{:.2f}"),
                            ("n_iter", "n_iter_", None), ("outcome", "outcome", None)]),
        "",
    ]
    p = res["persistence"]
    lines += [
        f"**Persistence**: {len(p)} round trips, {sum(r['exact'] for r in p)} bit-exact "
        "(`transform` output identical).",
        "",
        markdown_table(p, [("estimator", "estimator", None), ("format", "format", None),
                           ("bytes", "file bytes", "{:,}"), ("save_ms", "save ms", "{:.1f}"),
                           ("load_ms", "load ms", "{:.1f}"), ("exact", "exact", None)]),
        "",
    ]
    a = res["attacks"]
    lines += [
        f"**Model-file attacks**: {len(a)} tampered, incompatible or malicious files given "
        f"to `mmfactor.load`, {sum(r['refused'] for r in a)} refused with a clear error "
        "(no code from the file ran).",
        "",
        markdown_table(a, [("attack", "file", None), ("bytes", "bytes", "{:,}"),
                           ("refused", "refused", None), ("load_ms", "load ms", "{:.1f}"),
                           ("message", "message", None)]),
        "",
    ]
    if res.get("memory"):
        lines += [
            "**Memory**: a 10^6 x 10^6 sparse relation with 10^5 entries (4 TB dense float32), "
            "fitted in a fresh subprocess (`n_components=4`, `max_iter=2`; HyperLearn "
            "`diffusion_steps=0`).",
            "",
            markdown_table([dict(r, fit_gib=r["fit_rss_bytes"] / 2**30,
                                 py_mib=r["tracemalloc_peak_bytes"] / 2**20,
                                 dense_tb=r["dense_float32_bytes"] / 1e12) for r in res["memory"]],
                           [("estimator", "estimator", None), ("nnz", "stored entries", "{:,}"),
                            ("dense_tb", "dense size (TB)", "{:.0f}"),
                            ("fit_gib", "peak RSS over baseline (GiB)", "{:.2f}"),
                            ("py_mib", "tracemalloc peak (MiB)", "{:.0f}"),
                            ("seconds", "fit seconds", "{:.1f}")]),
            "",
        ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", action="store_true",
                    help="also fit CMF and HyperLearn on 10^6 x 10^6 (about 1 minute)")
    ap.add_argument("--output", default=str(HERE / "results" / "reliability.json"))
    ap.add_argument("--markdown", default=str(HERE / "RELIABILITY.md"),
                    help="the file whose generated section is rewritten")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the markdown from the JSON of the last run")
    args = ap.parse_args()
    if args.render:
        return render(json.loads(Path(args.output).read_text()), args.markdown)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = {"machine": machine(), "command": command(),
               "bad_inputs": bad_inputs(), "equivalents": equivalents(),
               "faults": faults(),
               "real_interrupts": real_interrupts(),
               "persistence": persistence(tmp), "attacks": attacks(tmp)}
    if args.memory:
        res["memory"] = memory()
    elif Path(args.output).exists():  # keep the last memory figures
        res["memory"] = json.loads(Path(args.output).read_text()).get("memory")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(res, indent=1, default=str))
    render(res, args.markdown)


def render(res, markdown):
    """Rewrite the generated section of ``markdown`` from the results ``res``."""
    table = summarize(res)
    m = res["machine"]
    table = (f"Machine: {m['cpu']} ({m['cpu_count']} cores, torch threads "
             f"{m['torch_threads']}), torch {m['torch']}. Command: `{res['command']}`\n\n"
             + table)
    md = Path(markdown)
    begin, end = "<!-- BEGIN GENERATED by benchmarks/reliability.py -->", "<!-- END GENERATED -->"
    text = md.read_text() if md.exists() else f"# Reliability\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    md.write_text(f"{head}{begin}\n{table}\n{end}{tail}")
    print(table)


if __name__ == "__main__":
    main()
