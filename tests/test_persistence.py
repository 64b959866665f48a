"""Persistence: pickle/joblib and the safe format (mmfactor.save / mmfactor.load).

Every estimator round-trips through pickle, joblib and the safe format with bit-identical
``transform`` output; a model whose devices were CUDA loads on a CPU-only machine; the
safe format refuses tampered, unsigned/wrongly signed, incompatible and malicious files
with a clear error, and never executes code from the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from test_reliability import ESTIMATORS, base_input, fitted

import mmfactor
from mmfactor import MultiModal
from mmfactor._persistence import FORMAT_VERSION, ModelFormatError, _digest


def _fit(est, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X)


def _state_equal(a, b):
    """Fitted attributes equal (arrays exactly), modules by their state dicts."""
    va, vb = vars(a), vars(b)
    assert sorted(va) == sorted(vb)
    for k in va:
        x, y = va[k], vb[k]
        if isinstance(x, torch.nn.Module):
            sa, sb = x.state_dict(), y.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa), k
        elif isinstance(x, dict) and x and isinstance(next(iter(x.values())), torch.nn.Module):
            for n in x:
                sa, sb = x[n].state_dict(), y[n].state_dict()
                assert all(torch.equal(sa[p], sb[p]) for p in sa), (k, n)
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=k)
        elif isinstance(x, dict | list) and not any(
                isinstance(v, np.ndarray | dict | list) for v in
                (x.values() if isinstance(x, dict) else x)):
            assert x == y or repr(x) == repr(y), k


ROUND_TRIPS = {
    "pickle": lambda est, tmp: pickle.loads(pickle.dumps(est)),
    "joblib": lambda est, tmp: (joblib.dump(est, tmp / "m.joblib"),
                                joblib.load(tmp / "m.joblib"))[1],
    "safe": lambda est, tmp: mmfactor.load(mmfactor.save(est, tmp / "m.mmf")),
    "method": lambda est, tmp: mmfactor.load(est.save(tmp / "m2.mmf")),
}


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_fitted_round_trip_is_exact(name, how, tmp_path):
    est = fitted(name)
    X = base_input(name)
    Z = est.transform(X)
    est2 = ROUND_TRIPS[how](est, tmp_path)
    assert type(est2) is type(est) and est2 is not est
    assert est2.get_params() == est.get_params()
    np.testing.assert_array_equal(est2.transform(X), Z)
    assert est2.score(X) == est.score(X)
    _state_equal(est, est2)
    if hasattr(est, "predict_entries"):
        coords = np.array([[0, 0], [3, 1]])
        np.testing.assert_array_equal(est2.predict_entries(coords), est.predict_entries(coords))
    # the loaded model is a working estimator: clone and refit it
    _fit(clone(est2), X)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_unfitted_round_trip(name, tmp_path):
    est = ESTIMATORS[name](n_components=3)
    est2 = mmfactor.load(mmfactor.save(est, tmp_path / "u.mmf"))
    assert est2.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est2.transform(base_input(name))


def test_mmeda_with_an_image_view_round_trips(tmp_path):
    rng = np.random.RandomState(0)
    X = MultiModal(img=rng.rand(12, 1, 6, 6), vec=rng.rand(12, 5))
    est = _fit(ESTIMATORS["MMEDA"](), X)
    est2 = mmfactor.load(est.save(tmp_path / "mmeda.mmf"))
    np.testing.assert_array_equal(est2.transform(X), est.transform(X))
    r1, r2 = est.inverse_transform(est.transform(X)), est2.inverse_transform(est2.transform(X))
    for a, b in zip(r1, r2, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    assert any(isinstance(m, torch.nn.Conv2d) for m in est2.module_.modules())


def test_parameters_of_every_supported_type_round_trip(tmp_path):
    """Sparse graphs, a RandomState, tuples, dicts with tuple keys, NaN/inf floats."""
    g = sp.random(5, 5, density=0.4, random_state=0, format="csr")
    g = g + g.T
    est = ESTIMATORS["HyperLearn"](graphs=[None, g], random_state=np.random.RandomState(3))
    est.some_extra_ = {("a", 1): [np.float32(1.5), np.nan, -np.inf, (1, "x")],
                       "dtype": np.dtype("float32"), "t": torch.float64,
                       "names": np.array(["a", "b"]), "u": np.arange(3, dtype=np.uint32)}
    est2 = mmfactor.load(mmfactor.save(est, tmp_path / "p.mmf"))
    g2 = est2.graphs[1]
    assert sp.issparse(g2) and g2.format == "csr" and (g2 != g).nnz == 0
    assert est2.random_state.get_state()[2] == est.random_state.get_state()[2]
    assert est2.random_state.randint(10**9) == est.random_state.randint(10**9)
    extra = est2.some_extra_[("a", 1)]
    assert type(extra[0]) is np.float32 and extra[0] == 1.5
    assert np.isnan(extra[1]) and extra[2] == -np.inf and extra[3] == (1, "x")
    assert est2.some_extra_["dtype"] == np.float32 and est2.some_extra_["t"] is torch.float64
    assert est2.some_extra_["names"].tolist() == ["a", "b"]
    assert est2.some_extra_["u"].dtype == np.uint32
    assert est2.some_extra_["u"].tolist() == [0, 1, 2]


def test_shared_tensors_stay_shared(tmp_path):
    est = fitted("MMEDA")
    t = torch.arange(4.0)
    est.a_, est.b_ = t, {"again": t}
    est2 = mmfactor.load(mmfactor.save(est, tmp_path / "s.mmf"))
    assert est2.b_["again"] is est2.a_


def test_a_model_fitted_on_cuda_loads_on_a_cpu_only_machine(tmp_path):
    """The state written by a CUDA fit: tensors moved to the CPU by __getstate__, the
    fit devices kept in devices_ (simulated here: this machine has no GPU)."""
    est = fitted("CMF")
    X = base_input("CMF")
    Z = est.transform(X)
    est.devices_ = [torch.device("cuda", 0), torch.device("cuda", 1)]
    est._ent_dev = {e: torch.device("cuda", 0) for e in est._ent_dev}
    for how in ("pickle", "safe"):
        est2 = ROUND_TRIPS[how](est, tmp_path)
        if not torch.cuda.is_available():
            assert est2.devices_ == [torch.device("cpu")] * 2
            assert set(est2._ent_dev.values()) == {torch.device("cpu")}
        np.testing.assert_array_equal(est2.transform(X), Z)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_model_file_with_cuda_storages_loads_on_a_cpu_only_machine(name, tmp_path,
                                                                     monkeypatch):
    """A model file whose tensors were serialized from CUDA storages (here: every storage
    tagged ``cuda:0`` as torch.save tags real CUDA tensors) loads on the CPU: the file
    really claims CUDA (a plain torch.load without map_location refuses it on a machine
    without CUDA), and mmfactor.load maps it to the CPU with the same transform."""
    est = fitted(name)
    X = base_input(name)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        path = mmfactor.save(est, tmp_path / "cuda.mmf")
    with zipfile.ZipFile(path) as zf:
        raw = zf.read("tensors.pt")
    assert b"cuda:0" in raw
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(io.BytesIO(raw), weights_only=True)
    est2 = mmfactor.load(path)
    state = est2.__getstate__()
    assert all(t.device.type == "cpu" for t in _tensors(state))
    np.testing.assert_array_equal(est2.transform(X), est.transform(X))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_cuda_fitted_model_saves_cpu_tensors(name, tmp_path):
    est = fitted(name, devices="cuda:0")
    for how in ("pickle", "safe"):
        est2 = ROUND_TRIPS[how](est, tmp_path)
        state = est2.__getstate__()
        assert all(t.device.type == "cpu" for t in _tensors(state))
        np.testing.assert_allclose(est2.transform(base_input(name)),
                                   est.transform(base_input(name)), rtol=1e-5, atol=1e-6)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.state_dict().values()
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


# ---- the safe format refuses bad files ---------------------------------------------------


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)


def _rewrite(path, *, state=None, tensors=None, header=None, key=None, resign=True):
    """Edit a saved file: a new state / tensors / header fields, re-signed or not."""
    m = _members(path)
    if state is not None:
        m["state.json"] = json.dumps(state).encode()
    if tensors is not None:
        m["tensors.pt"] = tensors
    h = json.loads(m["header.json"])
    if resign:
        h["digest"] = _digest([m["state.json"], m["tensors.pt"]], key)
    h.update(header or {})
    m["header.json"] = json.dumps(h).encode()
    _write(path, m)
    return path


@pytest.fixture
def saved(tmp_path):
    return mmfactor.save(fitted("CMF"), tmp_path / "cmf.mmf")


def test_tampered_state_is_refused(saved):
    m = _members(saved)
    m["state.json"] = m["state.json"].replace(b'"alpha":1.0', b'"alpha":7.0', 1)
    assert b'"alpha":7.0' in m["state.json"]
    _write(saved, m)
    with pytest.raises(ModelFormatError, match=r"does not match its SHA256 digest.*"
                                               r"corrupted or tampered with"):
        mmfactor.load(saved)


def test_tampered_tensors_are_refused(saved):
    m = _members(saved)
    t = torch.load(io.BytesIO(m["tensors.pt"]), weights_only=True)
    t["0"] = t["0"] + 1
    buf = io.BytesIO()
    torch.save(t, buf)
    m["tensors.pt"] = buf.getvalue()
    _write(saved, m)
    with pytest.raises(ModelFormatError, match="tampered"):
        mmfactor.load(saved)


def test_truncated_file_is_refused(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="not an mmfactor model file"):
        mmfactor.load(saved)


def test_a_key_signs_the_file(tmp_path):
    est = fitted("CMF")
    path = mmfactor.save(est, tmp_path / "k.mmf", key="s3cret")
    np.testing.assert_array_equal(mmfactor.load(path, key="s3cret").factors_["sample"],
                                  est.factors_["sample"])
    with pytest.raises(ModelFormatError, match="signed with a key.*pass key="):
        mmfactor.load(path)
    with pytest.raises(ModelFormatError, match=r"HMAC-SHA256 digest.*or the key is wrong"):
        mmfactor.load(path, key="guess")
    # an attacker without the key re-signs with plain SHA-256: refused when a key is expected
    _rewrite(path, header={}, key=None)
    with pytest.raises(ModelFormatError, match="saved without a key but key= was given"):
        mmfactor.load(path, key="s3cret")


def test_without_a_key_a_recomputed_digest_is_accepted(saved):
    """The documented limit: the plain digest catches corruption and naive edits only."""
    m = _members(saved)
    state = json.loads(m["state.json"])
    state["state"]["alpha"] = 7.0
    est = mmfactor.load(_rewrite(saved, state=state))
    assert est.alpha == 7.0


@pytest.mark.parametrize("field, value, match", [
    ("mmfactor_version", "9.3.0", r"written by mmfactor 9.3.0, incompatible with the running "
                                  r"mmfactor 0.1"),
    ("mmfactor_version", "0.0.9", r"written by mmfactor 0.0.9, incompatible"),
    ("format_version", FORMAT_VERSION + 1, rf"format version {FORMAT_VERSION + 1}; this "
                                           rf"mmfactor .* reads version {FORMAT_VERSION} only"),
    ("format", "something-else", r"is not an mmfactor model file"),
])
def test_incompatible_versions_are_refused(saved, field, value, match):
    _rewrite(saved, header={field: value})
    with pytest.raises(ModelFormatError, match=match):
        mmfactor.load(saved)


def test_a_compatible_patch_version_loads(saved):
    _rewrite(saved, header={"mmfactor_version": "0.1.7"})
    assert isinstance(mmfactor.load(saved), mmfactor.CMF)


@pytest.mark.parametrize("cls", ["os:system", "builtins:eval", "subprocess:Popen",
                                 "mmfactor.factorization._cmf:np.load",
                                 "mmfactor:__builtins__", "torch.nn:functional.F",
                                 "mmfactor.datasets._base:Path",
                                 "mmfactor.distributed:os.PathLike",
                                 "mmfactor.not_a_module:CMF"])
def test_classes_outside_mmfactor_are_never_imported(saved, cls):
    m = _members(saved)
    state = json.loads(m["state.json"])
    state["cls"] = cls
    _rewrite(saved, state=state, header={"class": cls})
    with pytest.raises(ModelFormatError, match=r"refusing to import|does not exist|not a class|"
                                               r"not a torch.nn.Module|not an mmfactor|"
                                               r"defined outside mmfactor"):
        mmfactor.load(saved)


def test_nested_objects_of_foreign_classes_are_refused(saved):
    m = _members(saved)
    state = json.loads(m["state.json"])
    state["state"]["alpha"] = {"__t__": "object", "cls": "subprocess:Popen",
                               "state": {"args": "touch pwned"}}
    _rewrite(saved, state=state)
    with pytest.raises(ModelFormatError, match=r"subprocess.Popen, outside mmfactor and "
                                               r"torch.nn; refusing to import it"):
        mmfactor.load(saved)


def test_unknown_value_types_are_refused(saved):
    m = _members(saved)
    state = json.loads(m["state.json"])
    state["state"]["alpha"] = {"__t__": "pickle", "v": "gASV..."}
    _rewrite(saved, state=state)
    with pytest.raises(ModelFormatError, match=r"unknown value type 'pickle'"):
        mmfactor.load(saved)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_MODEL_FILE",))


def test_a_pickle_payload_in_the_tensors_is_never_executed(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.BytesIO()
    torch.save({"0": _Evil()}, buf)
    _rewrite(saved, tensors=buf.getvalue())
    with pytest.raises(ModelFormatError, match="are not plain tensors"):
        mmfactor.load(saved)
    assert not (tmp_path / "PWNED_BY_MODEL_FILE").exists()


def test_a_pickle_file_is_not_a_model_file(tmp_path):
    joblib.dump(fitted("CMF"), tmp_path / "m.joblib")
    with pytest.raises(ModelFormatError, match="not a zip archive written by mmfactor.save"):
        mmfactor.load(tmp_path / "m.joblib")


def test_save_refuses_values_it_cannot_store_and_names_them(tmp_path):
    est = ESTIMATORS["CMF"](weights={"a": 1.0})
    est.hook_ = lambda x: x
    with pytest.raises(TypeError, match=r"CMF.hook_ is <function.*cannot be stored in the "
                                        r"safe format"):
        mmfactor.save(est, tmp_path / "x.mmf")
    est = ESTIMATORS["CMF"]()
    est.frame_ = io.BytesIO()
    with pytest.raises(TypeError, match=r"CMF.frame_ holds a _io.BytesIO"):
        mmfactor.save(est, tmp_path / "x.mmf")
    assert not list(tmp_path.iterdir())  # nothing written


def test_save_refuses_foreign_estimators(tmp_path):
    from sklearn.decomposition import PCA

    with pytest.raises(TypeError, match="not an mmfactor estimator"):
        mmfactor.save(PCA(), tmp_path / "pca.mmf")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = mmfactor.save(fitted("CMF"), tmp_path / "m.mmf")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("mmfactor._persistence.torch.save", boom)
    with pytest.raises(OSError, match="disk full"):
        mmfactor.save(fitted("DFMF"), path)
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mmf"]  # no temporary left


def test_the_file_is_json_plus_weights_only_tensors(saved):
    m = _members(saved)
    assert set(m) == {"header.json", "state.json", "tensors.pt"}
    header = json.loads(m["header.json"])
    assert header["class"] == "mmfactor.factorization._cmf:CMF"
    assert header["mmfactor_version"] == mmfactor.__version__
    assert header["digest"].startswith("sha256:")
    state = json.loads(m["state.json"])  # plain JSON, no NaN tokens
    assert state["state"]["n_components"] == 2
    tensors = torch.load(io.BytesIO(m["tensors.pt"]), weights_only=True)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())


def test_save_and_load_are_public():
    assert {"save", "load"} <= set(mmfactor.__all__)
    assert mmfactor.save is mmfactor._persistence.save
    assert all(hasattr(cls, "save") for cls in (mmfactor.CMF, mmfactor.DFMF, mmfactor.DCMF,
                                                mmfactor.MMEDA, mmfactor.HyperLearn))


@pytest.mark.parametrize("bad", [
    {"__t__": "device", "v": "warp:9"},
    {"__t__": "tensor", "key": "999", "requires_grad": False},
    {"__t__": "ndarray", "key": "0", "dtype": "<f8", "shape": [7, 7, 7]},
    {"__t__": "ndarray", "key": "0", "dtype": "|O", "shape": [1]},
    {"__t__": "float", "v": "1e999x"},
])
def test_malformed_values_are_refused_cleanly(saved, bad):
    m = _members(saved)
    state = json.loads(m["state.json"])
    state["state"]["alpha"] = bad
    _rewrite(saved, state=state)
    with pytest.raises(ModelFormatError, match=r"load: "):
        mmfactor.load(saved)


def test_deeply_nested_state_is_refused_cleanly(saved):
    m = _members(saved)
    state = json.loads(m["state.json"])
    text = json.dumps(state, separators=(",", ":"))
    deep = '{"__t__":"list","v":[' * 100000 + "1" + "]}" * 100000
    raw = text.replace('"alpha":1.0', '"alpha":' + deep, 1)
    assert len(raw) > len(text)
    m["state.json"] = raw.encode()
    h = json.loads(m["header.json"])
    h["digest"] = _digest([m["state.json"], m["tensors.pt"]], None)
    m["header.json"] = json.dumps(h).encode()
    _write(saved, m)
    with pytest.raises(ModelFormatError, match=r"malformed|nest"):
        mmfactor.load(saved)
