"""Persistence: pickle/joblib and the safe format (mmfactor.save / mmfactor.load).

Every estimator round-trips through pickle, joblib and the safe format with bit-identical
``transform`` output; a model whose devices were CUDA loads on a CPU-only machine; the
safe format refuses tampered, unsigned/wrongly signed, incompatible and malicious files
with a clear error, and never executes code from the file.
"""

from __future__ import annotations

import dataclasses
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
from mmfactor._persistence import FORMAT_VERSION, ModelFormatError, _digest, _signed_header


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
#
# ATTACKS: every forged, tampered, incompatible or malicious file, as a table shared with
# benchmarks/reliability.py (which reports it in RELIABILITY.md). Each entry edits a
# freshly saved CMF model file in place; mmfactor.load must refuse it with a
# ModelFormatError matching the regex, never run code from it, never crash the
# interpreter, never allocate out of proportion to the file.

TENSORS = "tensors.safetensors"


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress) as zf:
        for n, b in members.items():
            zf.writestr(n, b)


def _resign(m, key=None):
    """What an attacker without the key can do: recompute the plain digest."""
    h = json.loads(m["header.json"])
    h["digest"] = _digest([_signed_header(h), m["state.json"], m[TENSORS]], key)
    m["header.json"] = json.dumps(h).encode()


def _rewrite(path, *, state=None, tensors=None, header=None, key=None, resign=True):
    """Edit a saved file: a new state / tensors / header fields, re-signed or not."""
    m = _members(path)
    if state is not None:
        m["state.json"] = json.dumps(state).encode()
    if tensors is not None:
        m[TENSORS] = tensors
    h = json.loads(m["header.json"])
    h.update(header or {})
    m["header.json"] = json.dumps(h).encode()
    if resign:
        _resign(m, key)
    _write(path, m)
    return path


def _edit_state(fn, **kw):
    """An attack that edits the decoded state.json with ``fn(state)`` and re-signs."""

    def make(path):
        state = json.loads(_members(path)["state.json"])
        fn(state)
        _rewrite(path, state=state, **kw)

    return make


def _set_alpha(node):
    return _edit_state(lambda s: s["state"].__setitem__("alpha", node))


def _set_cls(cls):
    def fn(s):
        s["cls"] = cls

    return _edit_state(fn, header={"class": cls})


def _flip_state(path):
    m = _members(path)
    m["state.json"] = m["state.json"].replace(b'"alpha":1.0', b'"alpha":7.0', 1)
    _write(path, m)


def _flip_tensors(path):
    m = _members(path)
    raw = bytearray(m[TENSORS])
    raw[-1] ^= 0x01
    m[TENSORS] = bytes(raw)
    _write(path, m)


def _edit_header(path):
    m = _members(path)
    h = json.loads(m["header.json"])
    h["torch_version"] = "1.0"
    m["header.json"] = json.dumps(h).encode()
    _write(path, m)


def _compressed(method):
    def make(path):
        _write(path, _members(path), compress=method)

    return make


def _bzip2_bomb(path):
    """The member state.json replaced by 100 MB of spaces, bzip2'ed to a few hundred
    bytes (the digest is not even looked at: refused for its compression)."""
    m = _members(path)
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in m.items():
            if n == "state.json":
                info = zipfile.ZipInfo(n)
                info.compress_type = zipfile.ZIP_BZIP2
                with zf.open(info, "w", force_zip64=True) as out:
                    for _ in range(100):
                        out.write(b" " * 2**20)
            else:
                zf.writestr(n, b)


def _extra_member(path):
    m = _members(path)
    m["payload.bin"] = b"x"
    _write(path, m)


def _version_1(path):
    """A format-1 file: its tensors were a torch pickle."""
    m = _members(path)
    m["tensors.pt"] = m.pop(TENSORS)
    _write(path, m)


def _pickle_tensors(path):
    buf = io.BytesIO()
    torch.save({"0": _Evil()}, buf)
    _rewrite(path, tensors=buf.getvalue())


def _safetensors_header(meta):
    """A safetensors block whose JSON header is ``meta`` (and 8 bytes of data)."""
    raw = json.dumps(meta).encode()
    return len(raw).to_bytes(8, "little") + raw + b"\0" * 8


def _tensor_dtype_never_written(path):
    _add_tensors(path, {"f8": torch.zeros(4, dtype=torch.float8_e4m3fn)})


def _graph(**changes):
    """A CMF state whose (unused) alpha holds a 3x3 CSR matrix, with forged parts."""
    def arr(key, dtype, shape):
        return {"__t__": "ndarray", "key": key, "dtype": np.dtype(dtype).str,
                "shape": [shape]}

    node = {"__t__": "sparse", "format": "csr", "shape": [3, 3], "array": False,
            "data": arr("d", "f8", 2), "indices": arr("i", "i4", 2),
            "indptr": arr("p", "i4", 4)}
    node.update(changes.pop("node", {}))
    tensors = {"d": torch.ones(2, dtype=torch.float64),
               "i": torch.tensor([0, 2], dtype=torch.int32),
               "p": torch.tensor([0, 1, 2, 2], dtype=torch.int32), **changes}

    def make(path):
        state = json.loads(_members(path)["state.json"])
        state["state"]["alpha"] = node
        _rewrite(path, state=state)
        _add_tensors(path, tensors)

    return make


def _add_tensors(path, tensors):
    """Add tensors to a saved file's tensors member, and re-sign."""
    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors

    old = load_tensors(_members(path)[TENSORS])
    _rewrite(path, tensors=save_tensors({**old, **tensors}))


@dataclasses.dataclass
class Attack:
    id: str
    make: object  # make(path): edit the saved file in place
    match: str
    key: object = None  # the key the file is saved and loaded with


def _re_exported(cls):
    return Attack(f"class re-exported: {cls}", _set_cls(cls), r"re-exported from elsewhere")


ATTACKS = [
    Attack("state edited, digest not recomputed", _flip_state,
           r"does not match its SHA256 digest.*corrupted or tampered with"),
    Attack("tensors edited, digest not recomputed", _flip_tensors, r"SHA256 digest"),
    Attack("header edited, digest not recomputed", _edit_header, r"its header, state or "
           r"tensors\) was corrupted or tampered with"),
    Attack("signed file: header edited", _edit_header,
           r"HMAC-SHA256 digest.*or the key is wrong", key="s3cret"),
    Attack("signed file: edited and re-hashed without the key",
           _edit_state(lambda s: s["state"].__setitem__("alpha", 7.0)),
           r"saved without a key but key= was given", key="s3cret"),
    Attack("truncated file", lambda p: p.write_bytes(p.read_bytes()[:500]),
           r"not an mmfactor model file"),
    Attack("newer format version", lambda p: _rewrite(p, header={"format_version": 3}),
           rf"format version 3; this mmfactor .* reads version {FORMAT_VERSION} only"),
    Attack("format version 1 (tensors as a torch pickle)", _version_1,
           r"format version 1 \(tensors stored as a torch pickle\).*no longer reads"),
    Attack("incompatible mmfactor version (9.3.0)",
           lambda p: _rewrite(p, header={"mmfactor_version": "9.3.0"}),
           r"written by mmfactor 9.3.0, incompatible with the running mmfactor 0.1"),
    Attack("class os:system", _set_cls("os:system"), r"outside mmfactor and torch.nn"),
    _re_exported("mmfactor._persistence:torch.nn.modules.module._WrappedHook"),
    _re_exported("mmfactor.neural._mmeda:nn.utils.rnn.PackedSequence"),
    _re_exported("mmfactor.datasets._base:Path"),
    Attack("class: a torch.nn class not on the list",
           _set_cls("torch.nn.modules.module:_WrappedHook"), r"not one of the classes"),
    Attack("class: an mmfactor class that is not a model part",
           _set_cls("mmfactor._persistence:_Decoder"), r"not one of the classes"),
    Attack("nested object subprocess:Popen",
           _set_alpha({"__t__": "object", "cls": "subprocess:Popen",
                       "state": {"args": "touch pwned"}}),
           r"subprocess.Popen, outside mmfactor and torch.nn; refusing to import it"),
    Attack("unknown value tag 'pickle'", _set_alpha({"__t__": "pickle", "v": "gASV..."}),
           r"unknown value type 'pickle'"),
    Attack("pickle payload (__reduce__) as the tensors", _pickle_tensors,
           r"not a valid safetensors block"),
    Attack("a joblib pickle instead of a model file",
           lambda p: joblib.dump(fitted("CMF"), p), r"not a zip archive written by mmfactor"),
    Attack("member compressed with bzip2 (a 100 MB decompression bomb)", _bzip2_bomb,
           r"member state.json is compressed \(method 12\).*refusing to decompress"),
    Attack("members compressed with deflate", _compressed(zipfile.ZIP_DEFLATED),
           r"is compressed \(method 8\)"),
    Attack("an extra member", _extra_member, r"expected exactly \['header.json'"),
    Attack("a link to /dev/zero", lambda p: (p.unlink(), os.symlink("/dev/zero", p)),
           r"is not a regular file"),
    Attack("string dtype bomb (<U200000000)",
           _set_alpha({"__t__": "ndarray_str", "dtype": "<U200000000", "shape": [1],
                       "v": ["x"]}), r"out of proportion to the file's size"),
    Attack("string array shape bomb",
           _set_alpha({"__t__": "ndarray_str", "dtype": "<U1", "shape": [10**9],
                       "v": ["x"]}), r"1 strings declared with shape \(1000000000,\)"),
    Attack("array shape larger than its bytes",
           _set_alpha({"__t__": "ndarray", "key": "0", "dtype": "<f4",
                       "shape": [10**6, 10**6]}), r"declared with shape|dtype"),
    Attack("object dtype", _set_alpha({"__t__": "ndarray", "key": "0", "dtype": "|O",
                                       "shape": [1]}), r"refusing NumPy dtype '\|O'"),
    Attack("structured dtype string", _set_alpha({"__t__": "npdtype",
                                                  "v": "(100000000,)f8"}),
           r"refusing NumPy dtype"),
    Attack("safetensors header declaring 400 GB",
           lambda p: _rewrite(p, tensors=_safetensors_header(
               {"0": {"dtype": "F32", "shape": [10**11], "data_offsets": [0, 4 * 10**11]}})),
           r"not a valid safetensors block"),
    Attack("tensor dtype the writer never produces (float8)", _tensor_dtype_never_written,
           r"dtypes the writer never produces"),
    Attack("sparse index past the columns (was a SIGSEGV)",
           _graph(i=torch.tensor([0, 2**30], dtype=torch.int32)),
           r"index arrays that do not fit"),
    Attack("sparse negative index", _graph(i=torch.tensor([0, -5], dtype=torch.int32)),
           r"index arrays that do not fit"),
    Attack("sparse indptr past nnz", _graph(p=torch.tensor([0, 1, 9, 2], dtype=torch.int32)),
           r"index arrays that do not fit"),
    Attack("sparse shape bomb (10^12 columns as CSC)",
           _graph(node={"shape": [3, 10**12], "format": "csc"}),
           r"sparse indices too narrow|out of proportion"),
    Attack("sparse DIA bomb (diagonals x 10^9 columns)",
           _graph(node={"shape": [3, 10**9], "format": "dia", "indices": {
               "__t__": "ndarray", "key": "i", "dtype": "<i8", "shape": [2]}},
               i=torch.tensor([0, 10**9 - 1])), r"out of proportion"),
    Attack("device string", _set_alpha({"__t__": "device", "v": "cuda:0;rm -rf"}),
           r"invalid device"),
    Attack("torch dtype name that is a function", _set_alpha({"__t__": "torch_dtype",
                                                               "v": "load"}),
           r"refusing torch dtype 'load'"),
    Attack("integer with 5000 digits", lambda p: _edit_json(p, "1" * 5000),
           r"malformed state"),
    Attack("state nested 100000 deep",
           lambda p: _edit_json(p, '{"__t__":"list","v":[' * 100000 + "1" + "]}" * 100000),
           r"malformed|nest"),
]


def _edit_json(path, alpha_text):
    """Replace the JSON text of ``alpha`` by ``alpha_text`` and re-sign."""
    m = _members(path)
    text = m["state.json"].decode()
    assert '"alpha":1.0' in text
    m["state.json"] = text.replace('"alpha":1.0', '"alpha":' + alpha_text, 1).encode()
    _resign(m)
    _write(path, m)


def attack_file(attack, path):
    """Save a fitted CMF to ``path`` and apply ``attack`` to it (shared with the benchmark)."""
    mmfactor.save(fitted("CMF"), path, key=attack.key)
    attack.make(path)
    return path


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_forged_files_are_refused(attack, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = attack_file(attack, tmp_path / "attack.mmf")
    with pytest.raises(ModelFormatError, match=attack.match):
        mmfactor.load(path, key=attack.key)
    assert not (tmp_path / "PWNED_BY_MODEL_FILE").exists()


def test_attack_ids_are_unique():
    assert len({a.id for a in ATTACKS}) == len(ATTACKS) >= 30


@pytest.fixture
def saved(tmp_path):
    return mmfactor.save(fitted("CMF"), tmp_path / "cmf.mmf")


def test_a_key_signs_the_file(tmp_path):
    est = fitted("CMF")
    path = mmfactor.save(est, tmp_path / "k.mmf", key="s3cret")
    np.testing.assert_array_equal(mmfactor.load(path, key=b"s3cret").factors_["sample"],
                                  est.factors_["sample"])
    with pytest.raises(ModelFormatError, match="signed with a key.*pass key="):
        mmfactor.load(path)
    with pytest.raises(ModelFormatError, match=r"HMAC-SHA256 digest.*or the key is wrong"):
        mmfactor.load(path, key="guess")


@pytest.mark.parametrize("key", ["", b""])
def test_an_empty_key_is_refused(key, tmp_path):
    est = fitted("CMF")
    with pytest.raises(ValueError, match="save: key is empty"):
        mmfactor.save(est, tmp_path / "e.mmf", key=key)
    assert not list(tmp_path.iterdir())
    path = mmfactor.save(est, tmp_path / "s.mmf", key="s3cret")
    with pytest.raises(ValueError, match="load: key is empty"):
        mmfactor.load(path, key=key)
    with pytest.raises(TypeError, match="key must be a non-empty str or bytes; got int"):
        mmfactor.load(path, key=7)


def test_the_header_is_authenticated(tmp_path):
    """Every header field is covered by the digest: a signed file whose header says
    another version or class is refused even when the rest is untouched."""
    path = mmfactor.save(fitted("CMF"), tmp_path / "h.mmf", key="k")
    _rewrite(path, header={"mmfactor_version": "0.1.9"}, resign=False)
    with pytest.raises(ModelFormatError, match="or the key is wrong"):
        mmfactor.load(path, key="k")


def test_without_a_key_a_recomputed_digest_is_accepted(saved):
    """The documented limit: the plain digest catches corruption and naive edits only."""
    m = _members(saved)
    state = json.loads(m["state.json"])
    state["state"]["alpha"] = 7.0
    est = mmfactor.load(_rewrite(saved, state=state))
    assert est.alpha == 7.0


def test_a_compatible_patch_version_loads(saved):
    _rewrite(saved, header={"mmfactor_version": "0.1.7"})
    assert isinstance(mmfactor.load(saved), mmfactor.CMF)


@pytest.mark.parametrize("field, value, match", [
    ("mmfactor_version", "0.0.9", r"written by mmfactor 0.0.9, incompatible"),
    ("format", "something-else", r"is not an mmfactor model file"),
])
def test_incompatible_versions_are_refused(saved, field, value, match):
    _rewrite(saved, header={field: value})
    with pytest.raises(ModelFormatError, match=match):
        mmfactor.load(saved)


@pytest.mark.parametrize("cls", ["builtins:eval", "subprocess:Popen",
                                 "mmfactor.factorization._cmf:np.load",
                                 "mmfactor:__builtins__", "torch.nn:functional.F",
                                 "mmfactor.distributed:os.PathLike",
                                 "mmfactor.not_a_module:CMF",
                                 "mmfactor:CMF", "torch.nn:Linear",
                                 "mmfactor.neural._mmeda:nn.modules.module._WrappedHook"])
def test_classes_are_resolved_to_their_own_name_on_the_list(saved, cls):
    _set_cls(cls)(saved)
    with pytest.raises(ModelFormatError, match=r"refusing to import|does not exist|not a class|"
                                               r"re-exported from elsewhere|not one of the"):
        mmfactor.load(saved)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_MODEL_FILE",))


def test_the_sparse_attack_is_well_formed_when_its_indices_fit(tmp_path):
    """The forged-sparse attacks change only the index arrays: the same node with valid
    indices loads, as the 3x3 matrix it describes."""
    path = attack_file(Attack("valid", _graph(), ""), tmp_path / "g.mmf")
    m = mmfactor.load(path).alpha
    assert sp.issparse(m) and m.shape == (3, 3)
    np.testing.assert_array_equal(m.toarray(), [[1, 0, 0], [0, 0, 1], [0, 0, 0]])


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
    est = ESTIMATORS["CMF"]()
    est.z_ = np.zeros(3, dtype=np.complex128)
    with pytest.raises(TypeError, match=r"CMF.z_ has dtype complex128"):
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

    monkeypatch.setattr("safetensors.torch.save", boom)
    with pytest.raises(OSError, match="disk full"):
        mmfactor.save(fitted("DFMF"), path)
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mmf"]  # no temporary left


def test_the_file_is_json_plus_safetensors(saved):
    from safetensors.torch import load as load_tensors

    with zipfile.ZipFile(saved) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    m = _members(saved)
    assert set(m) == {"header.json", "state.json", TENSORS}
    header = json.loads(m["header.json"])
    assert header["class"] == "mmfactor.factorization._cmf:CMF"
    assert header["mmfactor_version"] == mmfactor.__version__
    assert header["format_version"] == FORMAT_VERSION == 2
    assert header["digest"].startswith("sha256:")
    state = json.loads(m["state.json"])  # plain JSON, no NaN tokens
    assert state["state"]["n_components"] == 2
    tensors = load_tensors(m[TENSORS])  # no pickle anywhere
    assert tensors and all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert b"\x80\x02" not in m[TENSORS][:16]  # not a pickle protocol header


def test_save_and_load_are_public():
    assert {"save", "load"} <= set(mmfactor.__all__)
    assert mmfactor.save is mmfactor._persistence.save
    assert all(hasattr(cls, "save") for cls in (mmfactor.CMF, mmfactor.DFMF, mmfactor.DCMF,
                                                mmfactor.MMEDA, mmfactor.HyperLearn))


@pytest.mark.parametrize("bad", [
    {"__t__": "device", "v": "warp:9"},
    {"__t__": "tensor", "key": "999", "requires_grad": False},
    {"__t__": "ndarray", "key": "0", "dtype": "<f8", "shape": [7, 7, 7]},
    {"__t__": "float", "v": "1e999x"},
    {"__t__": "npscalar", "dtype": "<i1", "v": 10**6},
    {"__t__": "RandomState", "keys": None, "pos": 0, "has_gauss": 0, "gauss": 0.0},
    {"__t__": "sparse", "format": "csr", "shape": [-1, 2], "array": False},
])
def test_malformed_values_are_refused_cleanly(saved, bad):
    _set_alpha(bad)(saved)
    with pytest.raises(ModelFormatError, match=r"load: "):
        mmfactor.load(saved)


# ---- fuzzing: mutated model files never crash load ---------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ_BASE = {}


def _fuzz_base(name):
    """The members of a saved model (made once per process: the fuzzers mutate copies)."""
    if name not in _FUZZ_BASE:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            _FUZZ_BASE[name] = _members(mmfactor.save(fitted(name), os.path.join(d, "m")))
    return _FUZZ_BASE[name]


def _load_bytes(tmp, members, resign):
    m = dict(members)
    if resign:
        _resign(m)
    path = os.path.join(tmp, "fuzz.mmf")
    _write(path, m)
    try:
        mmfactor.load(path)
    except ModelFormatError:
        pass  # refused: the only failure load may have


_TAGS = ["float", "parameter", "tensor", "ndarray", "ndarray_str", "npscalar", "npdtype",
         "device", "torch_dtype", "sparse", "RandomState", "list", "tuple", "set", "dict",
         "object", "pickle"]
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                  st.sampled_from(["0", "1", "<f8", "<U999999999", "|O", "cpu", "float32",
                                   "csr", "dia", "mmfactor.factorization._cmf:CMF",
                                   "torch.nn.modules.linear:Linear", "nan"]),
                  st.text(max_size=8))
_json = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["__t__", "v", "key", "dtype", "shape", "format",
                                     "data", "indices", "indptr", "array", "cls", "state",
                                     "requires_grad"]), inner, max_size=6),
    st.fixed_dictionaries({"__t__": st.sampled_from(_TAGS)},
                          optional={"v": inner, "key": inner, "dtype": inner, "shape": inner,
                                    "cls": inner, "state": inner, "format": inner})),
    max_leaves=12)


def _nodes(tree, path=()):
    yield path
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _nodes(v, (*path, i))


# 60 examples each in the suite (a few seconds); MMFACTOR_FUZZ_EXAMPLES=5000 fuzzes longer,
# with fresh random examples
_N_FUZZ = int(os.environ.get("MMFACTOR_FUZZ_EXAMPLES", "60"))
_FUZZ = settings(max_examples=_N_FUZZ, deadline=None, derandomize=_N_FUZZ <= 60,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


@_FUZZ
@given(name=st.sampled_from(["CMF", "MMEDA"]), data=st.data())
def test_fuzz_state_nodes_replaced_and_resigned(name, data, tmp_path):
    """A node of state.json replaced by random typed JSON, the digest recomputed (what an
    attacker without a key can do): load returns an estimator or a ModelFormatError."""
    members = _fuzz_base(name)
    tree = json.loads(members["state.json"])
    paths = list(_nodes(tree))[1:]
    where = data.draw(st.sampled_from(paths))
    node = tree
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = data.draw(_json)
    _load_bytes(tmp_path, {**members, "state.json": json.dumps(tree).encode()}, resign=True)


@_FUZZ
@given(name=st.sampled_from(["CMF", "HyperLearn"]), member=st.sampled_from(
    ["header.json", "state.json", TENSORS]), data=st.data(), resign=st.booleans())
def test_fuzz_member_bytes_mutated(name, member, data, resign, tmp_path):
    """Bytes of one member flipped, cut or inserted (re-signed or not), including the
    safetensors header's sizes and offsets."""
    members = dict(_fuzz_base(name))
    raw = bytearray(members[member])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "digits"]))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 64))]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # a digit made large: sizes, offsets, shapes
            digits = [i for i, c in enumerate(raw) if 48 <= c <= 57]
            if digits:
                i = data.draw(st.sampled_from(digits))
                raw[i:i + 1] = b"99999999999"
    members[member] = bytes(raw)
    _load_bytes(tmp_path, members, resign=resign and member != "header.json")


@_FUZZ
@given(data=st.data())
def test_fuzz_zip_container_mutated(data, tmp_path):
    """The archive's own bytes (local headers, central directory) mutated."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.mmf")
        _write(p, _fuzz_base("CMF"))
        raw = bytearray(open(p, "rb").read())
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "z.mmf"
    path.write_bytes(bytes(raw))
    try:
        mmfactor.load(path)
    except ModelFormatError:
        pass


def test_load_in_a_fresh_process_that_imported_only_mmfactor(tmp_path):
    """``import mmfactor`` imports the estimators lazily: load imports their packages (a
    fixed list) itself, and still never imports what a file names."""
    import subprocess
    import sys

    path = mmfactor.save(fitted("MMEDA"), tmp_path / "m.mmf")
    code = "import sys, mmfactor; print(type(mmfactor.load(sys.argv[1])).__name__)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["MMEDA"]
