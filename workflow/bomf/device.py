"""Where a job computes and in which precision: the device policy (config ``device``) and the precision policy
(config ``precision``), resolved once at the start of every job that loads a model, before any work, and
described in every record that job writes.

Device: ``cpu``; ``cuda`` (a job that cannot use CUDA stops with one line that says why); ``auto`` (CUDA where
torch can use it, else the CPU, unless the job was given a GPU, by SLURM or by CUDA_VISIBLE_DEVICES: then it
stops too, rather than train on a CPU core until its time limit).

Precision: scoring (validation, the fusion objective, test, the landscape) is always float32, with TF32
matmuls only where ``precision.tf32`` asks for them; training autocasts to ``precision.training`` (``auto``:
bf16 on GPUs with native bf16, compute capability 8.0 and newer; fp16 with a gradient scaler on older GPUs;
float32 on the CPU). Parameters, members, the EMA and exports are float32 whatever the training precision;
only a LoRA model's frozen base, which no training changes, is held in the training precision on CUDA
(``frozen_dtype``).

torch is imported inside the functions: the config check and the Snakefile read this module's names.
"""

import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

# cuBLAS is deterministic only with a fixed workspace, set before the first CUDA call (torch's reproducibility
# notes); ":4096:8" is the documented setting that costs least speed.
CUBLAS_WORKSPACE = ":4096:8"
COMPUTE_SETTINGS = ("device", "precision")  # the config keys every job that trains or scores a model reads
DEVICES = ("auto", "cuda", "cpu")
# What every record of a model job says of its computation (Compute.describe), and the provenance collects.
COMPUTE_FIELDS = ("device", "device_name", "capability", "torch_cuda", "training_precision", "scoring_precision",
                  "tf32")
TRAINING_PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SCORING_PRECISION = "fp32"
NATIVE_BF16 = (8, 0)  # Ampere and newer compute bf16 natively; older GPUs emulate it, slowly
NATIVE_FP16 = (7, 0)  # Volta and newer have fp16 tensor cores
# What SLURM sets in a job it gave GPUs to (gres/gpu), besides CUDA_VISIBLE_DEVICES.
SLURM_GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
NO_DEVICES = ("", "-1", "none", "NoDevFiles")


class DeviceError(ValueError):
    """The configured device or precision cannot be used on this machine; the message says why and what to set."""


def set_cublas_workspace() -> None:
    """The deterministic cuBLAS workspace, unless the user chose one: cuBLAS reads it when CUDA initialises."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def assigned_gpus() -> str | None:
    """How this process was given a GPU (SLURM's gres, or CUDA_VISIBLE_DEVICES), or None."""
    for variable in (*SLURM_GPU_VARIABLES, "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(variable)
        if value is not None and value.strip() not in NO_DEVICES:
            return f"{variable}={value}"
    return None


def cuda_problem() -> str | None:
    """Why torch cannot compute on CUDA here (None: it can): no CUDA in the torch build, a driver too old for
    it, or no device visible."""
    import torch

    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a build without CUDA (torch.version.cuda is None): install a CUDA "
                f"build of torch in this environment")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return None
    said = " ".join(str(w.message).strip() for w in caught)
    if "driver" in said.lower():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use the NVIDIA driver: {said}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (f"no CUDA device is visible to torch {torch.__version__} (CUDA {torch.version.cuda}; "
            f"CUDA_VISIBLE_DEVICES={'unset' if visible is None else repr(visible)})" + (f": {said}" if said else ""))


def resolve_device(setting: str):
    """The torch device of a job under the ``device`` setting; raises DeviceError where it cannot be used."""
    import torch

    set_cublas_workspace()
    if setting not in DEVICES:
        raise DeviceError(f"device: {setting!r} is not one of {', '.join(DEVICES)}")
    if setting == "cpu":
        return torch.device("cpu")
    problem = cuda_problem()
    if problem is None:
        return torch.device("cuda", torch.cuda.current_device())
    if setting == "cuda":
        raise DeviceError(f"device: cuda, but {problem}; set device: cpu to run on the CPU")
    assigned = assigned_gpus()
    if assigned is not None:
        raise DeviceError(f"this job was given a GPU ({assigned}) but cannot use it: {problem}; set device: cpu "
                          f"to run on the CPU on purpose")
    return torch.device("cpu")


def local_problem(config: dict) -> str | None:
    """Why the jobs of a local run (run where Snakemake runs) could not compute as configured, checked once
    before any job starts (None: they can). Only where a GPU is asked for or was given, and in a process of its
    own: CUDA initialised in Snakemake's would hold device memory for the whole run."""
    import json
    import subprocess
    import sys

    if config["device"] == "cpu" or (config["device"] == "auto" and assigned_gpus() is None):
        return None
    check = ("import json, sys\nfrom bomf.device import Compute, DeviceError\n"
             "try:\n    Compute.resolve(json.loads(sys.argv[1]))\nexcept DeviceError as error:\n    print(error)")
    package = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [package, os.environ.get("PYTHONPATH")]))
    settings = json.dumps({"device": config["device"], "precision": config["precision"]})
    result = subprocess.run([sys.executable, "-c", check, settings], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": path})
    if result.returncode != 0:
        return f"the device check failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}"
    return result.stdout.strip() or None


def capability(device) -> tuple[int, int] | None:
    import torch

    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None


def training_precision(setting: str, device) -> str:
    """``precision.training`` resolved for ``device``: bf16, fp16 or fp32 (auto: what the hardware does natively)."""
    if setting not in TRAINING_PRECISIONS:
        raise DeviceError(f"precision.training: {setting!r} is not one of {', '.join(TRAINING_PRECISIONS)}")
    found = capability(device)
    if found is None:
        if setting in ("bf16", "fp16"):
            raise DeviceError(f"precision.training: {setting} needs a CUDA device; on the CPU training runs in "
                              f"float32 (precision.training: auto or fp32)")
        return "fp32"
    if setting == "auto":
        return "bf16" if found >= NATIVE_BF16 else "fp16" if found >= NATIVE_FP16 else "fp32"
    if setting == "bf16" and found < NATIVE_BF16:
        raise DeviceError(f"precision.training: bf16, but {_device_name(device)} (compute capability {found[0]}.{found[1]}) has no "
                          f"native bf16 (8.0 and newer): set precision.training to fp16 or auto")
    return setting


def frozen_dtype(device, precision: str):
    """The dtype of the weights no training changes (a LoRA model's base) for training in ``precision`` on
    ``device``: bf16 or fp16 on CUDA, where training's autocast computes their matmuls in it anyway and half
    the memory is saved; float32 on the CPU and for fp32 training.

    Scoring keeps that base. It is still float32 scoring in the sense that matters for comparisons: every
    evaluation of a run (validation in training, the fusion objective, test) sees the same base weights, and
    what differs between the models compared (the adapters: members, fusions), the loss and the metrics are
    float32."""
    import torch

    if device.type != "cuda":
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


@dataclass(frozen=True)
class Compute:
    """A job's device and precisions, resolved from its settings (``resolve``)."""

    device: object  # torch.device
    training: str = "fp32"  # bf16 | fp16 | fp32: the autocast of training's forward passes
    tf32: bool = False  # TF32 matmuls (precision.tf32), in training and scoring

    @classmethod
    def resolve(cls, config: dict) -> "Compute":
        """From a job's settings (``device``, ``precision``): every check before any work."""
        device = resolve_device(config["device"])
        compute = cls(device, training_precision(config["precision"]["training"], device),
                      bool(config["precision"]["tf32"]))
        compute.apply()
        return compute

    def apply(self) -> None:
        """The process-wide matmul precision: float32 (IEEE) unless TF32 was asked for."""
        import torch

        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32

    def describe(self) -> dict:
        """What a record says of where and how its numbers were computed (the keys of COMPUTE_FIELDS)."""
        import torch

        found = capability(self.device)
        values = (self.device.type, _device_name(self.device), None if found is None else f"{found[0]}.{found[1]}",
                  torch.version.cuda, self.training, SCORING_PRECISION, self.tf32)
        return dict(zip(COMPUTE_FIELDS, values))

    def scoring_identity(self) -> dict:
        """What the scores of a fused model depend on beyond its inputs: the fuse journal replays only these (the
        training precision: a LoRA model's frozen base is held in it, ``frozen_dtype``)."""
        return {"device": self.device.type, "scoring_precision": SCORING_PRECISION, "tf32": self.tf32,
                "frozen_base": self.training}


def training_autocast(device, precision: str):
    """The autocast of a training forward pass: bf16 or fp16 on CUDA, none for fp32."""
    import torch

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def gradient_scaler(device, precision: str):
    """fp16 training's loss scaler (bf16 and fp32 need none); disabled otherwise, so callers use one code path."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
