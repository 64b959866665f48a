"""Device handling: ``devices=`` resolution, moving data, CPU-safe state for pickling.

``devices=`` is resolved once, at fit time, into one :class:`torch.device` per modality
(per view, per entity type or per tensor mode, as the model defines it):

* ``None`` or ``"cpu"``: everything on the CPU;
* one string (``"cuda:1"``): everything there;
* a list with one entry per modality, or a dict keyed by modality name (missing keys
  fall back to the CPU);
* ``"auto"``: the CUDA devices present, one per modality in turn, else the CPU.

Asking for a CUDA device that is not present is a :class:`ValueError`, never a silent
fallback.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

__all__ = ["resolve_devices", "check_device", "to_device", "state_to_cpu"]


def check_device(spec, *, where="devices"):
    """Return ``torch.device(spec)``, raising a clear error when it is not present."""
    if isinstance(spec, torch.device):
        dev = spec
    else:
        if not isinstance(spec, str):
            raise TypeError(
                f"{where}: expected a device string such as 'cpu' or 'cuda:0'; got {spec!r}."
            )
        try:
            dev = torch.device(spec)
        except RuntimeError as exc:
            raise ValueError(f"{where}: {spec!r} is not a valid torch device ({exc}).") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = dev.index if dev.index is not None else 0
        if index >= n:
            raise ValueError(
                f"{where}: device {str(dev)!r} was requested but this machine has "
                f"{n} CUDA device(s){'' if n else ' (torch.cuda.is_available() is False)'}. "
                "Use devices='cpu', or devices='auto' to fall back to the CPU."
            )
        dev = torch.device("cuda", index)
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"{where}: device 'mps' was requested but is not available.")
    elif dev.type != "cpu":
        raise ValueError(f"{where}: unsupported device type {dev.type!r}; use 'cpu' or 'cuda'.")
    return dev


def resolve_devices(devices, names):
    """Resolve ``devices=`` into one :class:`torch.device` per modality name.

    Parameters
    ----------
    devices : None, str, torch.device, list or dict
        The user's ``devices`` parameter.
    names : list of str
        The modalities, in order (view names, entity types or tensor modes).

    Returns
    -------
    list of torch.device
    """
    names = list(names)
    if devices is None:
        return [torch.device("cpu")] * len(names)
    if isinstance(devices, str) and devices == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            return [torch.device("cpu")] * len(names)
        return [torch.device("cuda", i % n) for i in range(len(names))]
    if isinstance(devices, str | torch.device):
        dev = check_device(devices)
        return [dev] * len(names)
    if isinstance(devices, dict):
        unknown = [k for k in devices if k not in names]
        if unknown:
            raise ValueError(f"devices names {unknown}, which are not among {names}.")
        return [
            check_device(devices.get(n, "cpu"), where=f"devices[{n!r}]") for n in names
        ]
    if isinstance(devices, list | tuple):
        if len(devices) != len(names):
            raise ValueError(
                f"devices has {len(devices)} entries; expected one per modality "
                f"({len(names)}: {names})."
            )
        return [
            check_device(d if d is not None else "cpu", where=f"devices[{i}] ({n!r})")
            for i, (d, n) in enumerate(zip(devices, names, strict=True))
        ]
    raise TypeError(
        "devices must be None, 'auto', a device string, a list with one entry per "
        f"modality or a dict by name; got {type(devices).__name__}."
    )


def to_device(obj, device):
    """Move tensors, modules and nested containers of them to ``device`` (recursively)."""
    if isinstance(obj, torch.Tensor | torch.nn.Module):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _copy_to_cpu(obj):
    # Module.to() moves a module in place: copy it first so that pickling never moves
    # the live model off its device
    if isinstance(obj, torch.nn.Module):
        on_cpu = all(t.device.type == "cpu" for t in
                     list(obj.parameters()) + list(obj.buffers()))
        return obj if on_cpu else copy.deepcopy(obj).to("cpu")
    if isinstance(obj, torch.Tensor):
        return obj.to("cpu")  # a new tensor when it was elsewhere
    if isinstance(obj, dict):
        return {k: _copy_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_copy_to_cpu(v) for v in obj)
    return obj


def state_to_cpu(state):
    """A copy of an estimator's ``__dict__`` with every tensor/module on the CPU.

    Used by ``__getstate__`` so that a model fitted on CUDA unpickles on a machine
    without a GPU; the devices it was fitted on stay in ``devices_``. The estimator
    itself is left where it is (modules on another device are copied, not moved).
    """
    return {k: _copy_to_cpu(v) for k, v in state.items()}


def as_numpy(t):
    """A float NumPy array on the CPU from a tensor (or pass an array through)."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def torch_generator(random_state, device="cpu"):
    """A seeded :class:`torch.Generator` drawn from ``random_state`` (never the global seed)."""
    from sklearn.utils import check_random_state

    rng = check_random_state(random_state)
    seed = int(rng.randint(0, 2**31 - 1))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen, rng
