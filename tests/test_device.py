import pickle

import pytest
import torch

from mmfactor._device import check_device, resolve_devices, state_to_cpu, to_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_resolve_forms():
    cpu = torch.device("cpu")
    assert resolve_devices(None, ["a", "b"]) == [cpu, cpu]
    assert resolve_devices("cpu", ["a"]) == [cpu]
    assert resolve_devices(["cpu", "cpu"], ["a", "b"]) == [cpu, cpu]
    assert resolve_devices({"b": "cpu"}, ["a", "b"]) == [cpu, cpu]
    auto = resolve_devices("auto", ["a", "b", "c"])
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert [d.type for d in auto] == (["cuda"] * 3 if n else ["cpu"] * 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a CPU-only machine")
def test_missing_cuda_is_an_error_not_a_fallback():
    with pytest.raises(ValueError, match="device 'cuda' was requested but this machine has 0 CUDA"):
        resolve_devices("cuda", ["a"])
    with pytest.raises(ValueError, match="devices\\[1\\] \\('b'\\).*'cuda:3'"):
        resolve_devices(["cpu", "cuda:3"], ["a", "b"])


def test_resolve_errors():
    with pytest.raises(ValueError, match="has 1 entries; expected one per modality"):
        resolve_devices(["cpu"], ["a", "b"])
    with pytest.raises(ValueError, match="names \\['z'\\]"):
        resolve_devices({"z": "cpu"}, ["a"])
    with pytest.raises(ValueError, match="not a valid torch device"):
        check_device("gpu0")
    with pytest.raises(TypeError, match="devices must be"):
        resolve_devices(3, ["a"])
    with pytest.raises(TypeError, match="expected a device string"):
        resolve_devices([3], ["a"])


def test_to_device_and_state_to_cpu_are_recursive():
    state = {"a": [torch.ones(2), {"b": torch.nn.Linear(2, 2)}], "c": 3}
    out = state_to_cpu(to_device(state, "cpu"))
    assert out["c"] == 3 and out["a"][0].device.type == "cpu"
    assert isinstance(pickle.loads(pickle.dumps(out))["a"][1]["b"], torch.nn.Linear)


@cuda
@pytest.mark.cuda
def test_cuda_tensors_come_back_to_cpu():
    out = state_to_cpu({"t": torch.ones(2, device="cuda")})
    assert out["t"].device.type == "cpu"
