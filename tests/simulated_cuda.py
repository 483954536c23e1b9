"""A stand-in CUDA device on the CPU, so that the code paths that run only on a GPU run here, and a tensor or
model left on the wrong device fails as it would on a GPU.

Inside ``simulated_cuda()`` torch reports one CUDA device (compute capability 8.0, native bf16) and a build
with CUDA. Tensors put on "cuda" (``.to``, ``.cuda()``, factories given ``device=``) stay in CPU memory but are
tagged with the device they were put on; what is computed from a tagged tensor is tagged too, ``.device``
reads the tag, ``.cpu()`` and ``.to("cpu")`` copy and untag, and ``.numpy()`` of a tagged tensor fails as it
does on CUDA. A model's parameters carry the tag of the last ``Module.to``. Every outermost module call
checks that its tensor arguments, parameters and buffers are on one device, and raises torch's CUDA error
where they are not. ``torch.autocast("cuda", ...)`` autocasts on the CPU, so reduced-precision paths compute
in that precision here too.
"""

from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

CAPABILITY = (8, 0)
NAME = "simulated CUDA device"
TOTAL_MEMORY, FREE_MEMORY = 80 * 2**30, 79 * 2**30  # an H100's, as torch.cuda.mem_get_info reports them
_TAG = "_simulated_cuda"
_DEVICE_GET = torch._C.TensorBase.device.__get__
_IS_CUDA_GET = torch._C.TensorBase.is_cuda.__get__
_DATA_SET = torch._C.TensorBase.data.__set__


def on_cuda(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and getattr(tensor, _TAG, False)


def _tag(value, cuda: bool):
    for tensor in tree_flatten(value)[0]:
        if isinstance(tensor, torch.Tensor):
            setattr(tensor, _TAG, cuda)
    return value


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _cpu(device):
    return "cpu" if _is_cuda(device) else device


class _Placement(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func == _DEVICE_GET:
            return torch.device("cuda", 0) if on_cuda(args[0]) else func(*args)
        if func == _IS_CUDA_GET:
            return on_cuda(args[0])
        if func == _DATA_SET:
            func(*args)
            return _tag(args[0], on_cuda(args[1]))
        if func is torch.Tensor.numpy and on_cuda(args[0]):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first. (simulated CUDA)")
        if func is torch.Tensor.cuda:
            return _tag(args[0].to("cpu", copy=True), True)
        if func is torch.Tensor.cpu:
            return _tag(args[0].to("cpu", copy=True), False) if on_cuda(args[0]) else func(*args, **kwargs)
        if func is torch.Tensor.to:
            return self._to(func, args, kwargs)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
            return _tag(func(*args, **kwargs), True)
        result = func(*args, **kwargs)
        if any(on_cuda(t) for t in tree_flatten((args, kwargs))[0]):
            _tag(result, True)
        return result

    @staticmethod
    def _to(func, args, kwargs):
        tensor, rest = args[0], args[1:]
        if rest and isinstance(rest[0], torch.Tensor):
            target = on_cuda(rest[0])
            rest = (rest[0].dtype, *rest[1:])
        else:
            parse_kwargs = {k: v for k, v in kwargs.items() if k != "copy"}
            device = torch._C._nn._parse_to(*rest, **parse_kwargs)[0]
            target = None if device is None else device.type == "cuda"
            rest = tuple(_cpu(a) if isinstance(a, (str, torch.device)) else a for a in rest)
            if "device" in kwargs:
                kwargs["device"] = _cpu(kwargs["device"])
        source = on_cuda(tensor)
        if target is None or target == source:
            return _tag(func(tensor, *rest, **kwargs), source)
        return _tag(func(tensor, *rest, **{**kwargs, "copy": True}), target)


def _devices(module: nn.Module, args, kwargs) -> set[str]:
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.dim() > 0]
    tensors += [*module.parameters(), *module.buffers()]
    return {"cuda:0" if on_cuda(t) else "cpu" for t in tensors}


@contextmanager
def simulated_cuda(monkeypatch):
    """Torch with one stand-in CUDA device for the block (``monkeypatch``: pytest's, which undoes the stubs)."""
    depth = [0]
    call = nn.Module.__call__

    def checked_call(module, *args, **kwargs):
        if depth[0] == 0:
            devices = _devices(module, args, kwargs)
            if len(devices) > 1:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"{' and '.join(sorted(devices, reverse=True))}! (simulated CUDA, calling "
                                   f"{type(module).__name__})")
        depth[0] += 1
        try:
            return call(module, *args, **kwargs)
        finally:
            depth[0] -= 1

    autocast = torch.autocast

    def cpu_autocast(device_type, *args, **kwargs):
        return autocast("cpu" if device_type == "cuda" else device_type, *args, **kwargs)

    rng_states = {}
    stubs = {"is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
             "is_initialized": lambda: True, "get_device_name": lambda device=None: NAME,
             "get_device_capability": lambda device=None: CAPABILITY, "is_bf16_supported": lambda *a, **k: True,
             "get_rng_state": lambda device="cuda": rng_states.get("state", torch.get_rng_state()),
             "set_rng_state": lambda state, device="cuda": rng_states.update(state=state),
             "manual_seed": lambda seed: None, "manual_seed_all": lambda seed: None, "synchronize": lambda *a: None,
             "memory_allocated": lambda *a: 0, "max_memory_allocated": lambda *a: 0,
             "reset_peak_memory_stats": lambda *a: None, "empty_cache": lambda: None,
             "mem_get_info": lambda device=None: (FREE_MEMORY, TOTAL_MEMORY)}
    for name, stub in stubs.items():
        monkeypatch.setattr(torch.cuda, name, stub)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    # Batches are collated into pinned memory by a worker thread (SplitData.batches), outside this thread's mode.
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor, *args, **kwargs: tensor)
    monkeypatch.setattr(torch, "autocast", cpu_autocast)
    monkeypatch.setattr(nn.Module, "__call__", checked_call)
    with _Placement():
        yield
