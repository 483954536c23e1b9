"""What a GPU changes, checked in one short run through the pipeline's own job functions (``bomf.pipeline``,
called by keyword with a config checked by ``bomf.config.validate_config``, as ``snakemake all`` calls them).

    python benchmarks/gpu_check.py --device cuda --bundle benchmarks/gpu_bundle --out gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --device cpu --out /tmp/gpu_check.json   # the rehearsal

On a GPU host run it through ``benchmarks/gpu_check.sh``, which logs the host and installs what it lacks from the
bundle (``benchmarks/gpu_bundle.py``: wheels, MiniLM's and SmolLM2's tokenizers and configs, small data sets;
no network needed). Models are built from their configs with random weights: nothing asserted depends on them.

Each section runs in its own try/except and is recorded, with its assertions and measurements, in one JSON file
rewritten after every section (a time limit still leaves what ran); a section whose library or input is
missing is skipped with the reason. Every Python warning is recorded, torch's deterministic-algorithm
warnings also by op. Sizes depend on the device (``SIZES``, written to the JSON): the CPU's make the
rehearsal finish in minutes.
"""

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))  # bomf, where the editable install failed on the host

from bomf.device import set_cublas_workspace  # noqa: E402  (stdlib only)

# cuBLAS reads its workspace setting when CUDA first initialises: before anything here touches the GPU.
set_cublas_workspace()

BUNDLE = REPO / "benchmarks" / "gpu_bundle"
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
TINY_GENERATION_CONFIG = REPO / "tests" / "configs" / "tiny_generation.yaml"
SIZES = {
    "cpu": {"max_train": 128, "val_size": 64, "max_test": 64, "max_length": 64, "batch_size": 16, "epochs": 2,
            "members": 3, "stack_members": 4, "bo_initial": 3, "bo_evaluations": 6, "gen_max_train": 24,
            "gen_val_size": 12, "gen_max_test": 16, "gen_max_length": 96, "max_new_tokens": 8, "gen_members": 2,
            "fused_points": 2, "determinism_train": 48},
    "cuda": {"max_train": 1024, "val_size": 256, "max_test": 256, "max_length": 128, "batch_size": 32, "epochs": 2,
             "members": 5, "stack_members": 16, "bo_initial": 3, "bo_evaluations": 6, "gen_max_train": 256,
             "gen_val_size": 32, "gen_max_test": 64, "gen_max_length": 128, "max_new_tokens": 24, "gen_members": 5,
             "fused_points": 4, "determinism_train": 1024},
}
# High for random weights, so that members differ in their scores too (scoring_precision compares with that).
LEARNING_RATE = {"minilm": 3e-4, "llama": 5e-3}
SEED = 0
# What every pipeline job imports (the bundle leaves the compiled scientific stack to the host).
PIPELINE = ("torch", "transformers", "numpy", "scipy", "pandas", "sklearn", "yaml", "jsonschema", "snakemake")
# torch's message when use_deterministic_algorithms(True, warn_only=True) meets an op without one.
NONDETERMINISTIC = "does not have a deterministic implementation"
# Seconds a section needs at least: a later one is skipped rather than cut by the time limit mid-way.
MIN_SECTION_SECONDS = 20


class Skip(Exception):
    """A section that cannot run here (a library or an earlier result missing): its reason."""


class Section:
    """What one section asserts and measures."""

    def __init__(self):
        self.assertions, self.measured = [], {}

    def check(self, what: str, passed: bool, value=None, expected=None) -> bool:
        self.assertions.append({"what": what, "passed": bool(passed), "value": value, "expected": expected})
        return bool(passed)


class Report:
    """The JSON file, rewritten after every section (and when one starts, so a time limit shows which ran)."""

    def __init__(self, out: Path, device: str, budget: float | None):
        self.out, self.budget, self.started = out, budget, time.monotonic()
        self.data = {"device": device, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     "finished": False, "environment": {}, "sizes": SIZES[device], "sections": [],
                     "warnings": [], "nondeterministic_ops": {}}
        self.section_name = "start"
        self._seen = {}
        warnings.simplefilter("always")  # every warning once per section and message, counted (record_warning)
        warnings.showwarning = self.record_warning

    def record_warning(self, message, category, filename, lineno, file=None, line=None):
        text = str(message).strip()
        key = (self.section_name, category.__name__, text)
        if key in self._seen:
            self._seen[key]["count"] += 1
            return
        self._seen[key] = {"section": self.section_name, "category": category.__name__, "message": text[:2000],
                           "where": f"{filename}:{lineno}", "count": 1}
        self.data["warnings"].append(self._seen[key])
        if NONDETERMINISTIC in text:
            op = text.split(NONDETERMINISTIC)[0].strip()
            sections = self.data["nondeterministic_ops"].setdefault(op, [])
            if self.section_name not in sections:
                sections.append(self.section_name)
        print(f"warning [{self.section_name}] {category.__name__}: {text.splitlines()[0][:300]}", flush=True)

    def write(self) -> None:
        self.data["seconds"] = round(time.monotonic() - self.started, 1)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.out)

    def run(self, name: str, function, *needs: str) -> Section | None:
        """Run one section: skipped for a missing module of ``needs`` or when the time budget is spent."""
        entry = {"name": name, "status": "running", "reason": "", "seconds": 0.0, "assertions": [], "measured": {}}
        self.data["sections"].append(entry)
        missing = [module for module in needs if importlib.util.find_spec(module) is None]
        left = None if self.budget is None else self.budget - (time.monotonic() - self.started)
        if missing:
            entry.update(status="skipped", reason=f"not installed: {', '.join(missing)}")
        elif left is not None and left < MIN_SECTION_SECONDS:
            entry.update(status="skipped", reason=f"time budget spent ({left:.0f} s of {self.budget:.0f} s left)")
        if entry["status"] == "skipped":
            print(f"== {name}: skipped ({entry['reason']})", flush=True)
            self.write()
            return None
        print(f"== {name}", flush=True)
        self.section_name, section, started = name, Section(), time.monotonic()
        self.write()
        try:
            function(section)
        except Skip as reason:
            entry.update(status="skipped", reason=str(reason))
        except Exception as error:  # recorded; the next section still runs
            entry.update(status="failed", reason=f"{type(error).__name__}: {error}"[:2000],
                         traceback=traceback.format_exc().splitlines()[-25:])
            traceback.print_exc()
        else:
            failed = [a["what"] for a in section.assertions if not a["passed"]]
            entry.update(status="failed" if failed else "passed",
                         reason=f"assertion failed: {'; '.join(failed)}" if failed else "")
        entry.update(seconds=round(time.monotonic() - started, 2), assertions=section.assertions,
                     measured=section.measured)
        print(f"== {name}: {entry['status']} in {entry['seconds']:.1f} s {entry['reason']}", flush=True)
        self.section_name = "between sections"
        self.write()
        return section


def version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def max_abs_difference(first: dict, second: dict) -> float:
    """The largest absolute difference between two states of the same tensors (inf: different tensors)."""
    if first.keys() != second.keys():
        return math.inf
    return max((float((a.double() - second[name].double()).abs().max()) if a.numel() else 0.0)
               for name, a in first.items())


def states_equal(first: dict, second: dict) -> bool:
    import torch

    return first.keys() == second.keys() and all(torch.equal(t, second[name]) for name, t in first.items())


class Check:
    """The sections, sharing the work directory, the built models and the stage-2 members."""

    def __init__(self, args, report: Report):
        self.device, self.bundle, self.report = args.device, args.bundle.resolve(), report
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.installed, self.setup = args.installed and args.installed.resolve(), args.setup
        os.chdir(self.work)  # the jobs' working directory, as Snakemake's: output_dir is relative to it
        self.size = SIZES[args.device]
        self.models: dict[str, Path] = {}
        self.sst2_members: Path | None = None
        print(f"work directory {self.work}", flush=True)

    # ------------------------------------------------------------------------------------------ helpers

    def config(self, generation: bool = False, **overrides) -> dict:
        """A pipeline config from the tests' tiny one, on this device, with the bundle's data and models."""
        import yaml

        from bomf.config import validate_config

        size = self.size
        config = yaml.safe_load((TINY_GENERATION_CONFIG if generation else TINY_CONFIG).read_text())
        prefix = "gen_" if generation else ""
        data = {"split_seed": 0, "val_size": size[f"{prefix}val_size"], "max_train": size[f"{prefix}max_train"],
                "max_test": size[f"{prefix}max_test"]}
        data["e2e_dir" if generation else "glue_dir"] = str(self.bundle / "data" / ("e2e" if generation else "glue"))
        model = "llama" if generation else "minilm"
        entry = {"source": str(self.models[model]), "max_length": size[f"{prefix}max_length"]}
        if generation:
            entry["lora"] = config["model_catalog"]["tiny"]["lora"]
            config["generation"] = {"max_new_tokens": size["max_new_tokens"]}
        else:
            entry["proxy_frozen_layers"] = 1
        config.update(tasks=["e2e"] if generation else ["sst2", "stsb"], models=[model], seeds=[SEED],
                      device=self.device, precision={"training": "auto", "tf32": False},
                      output_dir="results", data=data, model_catalog={model: entry})
        config["optim"]["eval_batch_size"] = 64
        config["optim"]["max_device_batch"] = size["batch_size"]
        config["finetune"] = {"epochs": size["epochs"], "members": size[f"{prefix}members"], "start_fraction": 0.5,
                              "ema_decay": 0.9}
        config["fusion"].update(methods=["bomf", "swa"], initial_points=size["bo_initial"],
                                evaluations=size["bo_evaluations"])
        config["baselines"]["methods"] = []
        config["export"] = {"methods": []}
        config["figures"]["landscape"]["enabled"] = False
        config.update(overrides)
        return validate_config(config)

    def prepared(self, config: dict, task: str) -> Path:
        from bomf import pipeline

        out = self.work / "data" / task
        if not (out / "split.json").is_file():
            pipeline.prepare_data(config=config, task=task, out_dir=out)
        return out

    def best_file(self, task: str, model: str) -> Path:
        """Stage 1's choice, as the hpo_select job writes it (stage 1 itself is not what a GPU changes)."""
        from bomf.records import HpoChoice
        from bomf.tasks.registry import get_task

        path = self.work / "results" / task / model / f"seed{SEED}" / "hpo" / "best.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        HpoChoice({"learning_rate": LEARNING_RATE[model], "batch_size": self.size["batch_size"]}, 0.0, 0.0,
                  get_task(task, {}).primary_metric, 1, "").write(path)
        return path

    def finetune(self, config: dict, task: str, model: str, name: str) -> Path:
        """pipeline.finetune into results/<task>/<model>/seed0/<name>; the members' directory."""
        from bomf import pipeline

        run = self.work / "results" / task / model / f"seed{SEED}"
        out = run / name
        pipeline.finetune(config=config, task=task, model=model, seed=SEED, data_dir=self.prepared(config, task),
                          best_file=self.best_file(task, model), out_dir=out, staging_dir=run / f"{name}.resume",
                          checkpoint_seconds=60 * config["finetune"]["checkpoint_minutes"])
        return out

    def needs_members(self) -> Path:
        if self.sst2_members is None:
            raise Skip("no stage-2 members: the finetune section did not produce them")
        return self.sst2_members

    # ------------------------------------------------------------------------------------------ sections

    def environment(self, s: Section) -> None:
        import torch

        from bomf.device import COMPUTE_FIELDS, NATIVE_BF16, Compute

        env = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
               "torch": torch.__version__, "torch_cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               "cuda_available": torch.cuda.is_available(),
               "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "versions": {name: version(name) for name in
                            ("transformers", "peft", "botorch", "gpytorch", "tokenizers", "safetensors", "numpy",
                             "scipy", "pandas", "scikit-learn", "snakemake", "jsonschema", "PyYAML", "sacrebleu",
                             "rouge-score", "bomf")},
               "setup": self.setup, "installed_from_bundle": json.loads(self.installed.read_text())
               if self.installed and self.installed.is_file() else None}
        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            capability = torch.cuda.get_device_capability(index)
            properties = torch.cuda.get_device_properties(index)
            env.update(device_name=torch.cuda.get_device_name(index), capability=f"{capability[0]}.{capability[1]}",
                       native_bf16=capability >= NATIVE_BF16, memory_gib=round(properties.total_memory / 2**30, 1),
                       device_count=torch.cuda.device_count(),
                       cublas_workspace=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        compute = Compute.resolve({"device": self.device, "precision": {"training": "auto", "tf32": False}})
        env["compute"] = compute.describe()
        self.report.data["environment"] = env
        s.measured.update(env)
        s.check("the device resolves as configured", compute.device.type == self.device, compute.device.type,
                self.device)
        s.check("Compute.describe gives every COMPUTE_FIELDS key", set(env["compute"]) == set(COMPUTE_FIELDS),
                sorted(env["compute"]), sorted(COMPUTE_FIELDS))
        if self.device == "cuda":
            expected = "bf16" if env["native_bf16"] else "fp16"
            s.check("training precision auto resolves to the hardware's native one", compute.training == expected,
                    compute.training, expected)

    def build_models(self, s: Section) -> None:
        """MiniLM (all-MiniLM-L6-v2's config and tokenizer) and the tiny Llama (SmolLM2's tokenizer), with random
        weights, saved as the checkpoints the model catalog points at."""
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer, LlamaConfig, LlamaForCausalLM

        for name, folder in (("minilm", "minilm"), ("llama", "smollm2")):
            out = self.work / "models" / name
            if not (out / "config.json").is_file():
                torch.manual_seed(SEED)
                if name == "minilm":
                    model = AutoModel.from_config(AutoConfig.from_pretrained(self.bundle / folder))
                else:
                    model = LlamaForCausalLM(LlamaConfig.from_pretrained(self.bundle / folder))
                model.save_pretrained(out)
                AutoTokenizer.from_pretrained(self.bundle / folder).save_pretrained(out)
            self.models[name] = out
            s.measured[f"{name}_parameters"] = sum(p.numel() for p in AutoModel.from_pretrained(out).parameters())
        s.check("both models saved", all((p / "config.json").is_file() for p in self.models.values()))

    def finetune_resume(self, s: Section) -> None:
        """Stage 2 uninterrupted, then again killed (SIGKILL) once its staging directory holds a training state
        and resumed: the members must be bit-identical."""
        import pandas as pd

        from bomf.records import MemberManifest
        from bomf.train.members import load_members
        from bomf.train.resume import STATE_FILE

        config = self.config()
        started = time.perf_counter()
        reference = self.finetune(config, "sst2", "minilm", "members")
        wall = time.perf_counter() - started
        trajectory = pd.read_csv(reference / "trajectory.csv")
        examples = self.size["max_train"] * self.size["epochs"]
        s.measured.update(job_seconds=round(wall, 2), training_seconds=float(trajectory["seconds"].iloc[-1]),
                          train_examples_per_second=round(examples / float(trajectory["seconds"].iloc[-1]), 1),
                          members=len(trajectory), val_accuracy=trajectory["val_accuracy"].round(4).tolist())
        self.sst2_members = reference

        # The same job in a process of its own, killed as a pre-empted node would kill it.
        run = reference.parent
        interrupted, staging = run / "members-killed", run / "members-killed.resume"
        kwargs = {"config": config, "task": "sst2", "model": "minilm", "seed": SEED,
                  "data_dir": str(self.prepared(config, "sst2")), "best_file": str(self.best_file("sst2", "minilm")),
                  "out_dir": str(interrupted), "staging_dir": str(staging),
                  "checkpoint_seconds": 60 * config["finetune"]["checkpoint_minutes"]}
        job = self.work / "killed-finetune.json"
        job.write_text(json.dumps({"job": "finetune", "kwargs": kwargs}))
        log = self.work / "killed-finetune.log"
        started = time.perf_counter()
        with log.open("w") as output:
            process = subprocess.Popen([sys.executable, __file__, "--job", str(job)], stdout=output,
                                       stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 600
            while not (staging / STATE_FILE).is_file() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        killed_at = json.loads((staging / STATE_FILE).read_text())["step"] if (staging / STATE_FILE).is_file() else None
        s.measured.update(killed_at_step=killed_at, killed_after_seconds=round(time.perf_counter() - started, 2),
                          killed_log_tail=log.read_text()[-1500:])
        if not s.check("the job was killed after writing a training state, before finishing",
                       killed_at is not None and not (interrupted / "members.json").exists(),
                       {"state_step": killed_at, "finished": (interrupted / "members.json").exists()}):
            return
        said, started = io.StringIO(), time.perf_counter()
        with contextlib.redirect_stdout(said):
            self.finetune(config, "sst2", "minilm", "members-killed")
        s.measured["resumed_job_seconds"] = round(time.perf_counter() - started, 2)
        print(said.getvalue(), end="")
        s.check("the rerun resumed from the state", f"resumed from step {killed_at}" in said.getvalue(),
                said.getvalue().splitlines()[:2], f"resumed from step {killed_at}")
        same = MemberManifest.read(interrupted).members == MemberManifest.read(reference).members
        value = None
        if not same:
            value = [max_abs_difference(a, b) for a, b in zip(load_members(interrupted), load_members(reference))]
        s.check("resumed members bit-identical to the uninterrupted run's (same checksums)", same,
                value and {"max_abs_difference_per_member": value}, "same checksums")
        columns = [c for c in trajectory.columns if c != "seconds"]
        resumed = pd.read_csv(interrupted / "trajectory.csv")[columns]
        s.check("resumed trajectory equal (scores, losses)", resumed.equals(trajectory[columns]),
                resumed.to_dict("records") if not resumed.equals(trajectory[columns]) else None)

    def member_stack(self, s: Section) -> None:
        """MemberStack on the device: a one-hot mix is its member bit for bit, and the stack holds N·P floats."""
        import torch

        from bomf.fuse.fusion import MemberStack
        from bomf.tasks.models import member_state
        from bomf.tasks.registry import get_task
        from bomf.tasks.sequence import load_classifier

        torch.manual_seed(SEED)
        state = member_state(load_classifier(str(self.models["minilm"]), get_task("sst2", {})))
        count = self.size["stack_members"]
        generator = torch.Generator().manual_seed(SEED)
        # Distinct members: the model's state plus seeded noise (the values do not matter to what is asserted).
        states = [{name: t + 1e-3 * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
                   for name, t in state.items()} for _ in range(count)]
        parameters = sum(t.numel() for t in state.values() if t.is_floating_point())
        device = torch.device(self.device)
        before = torch.cuda.memory_allocated() if device.type == "cuda" else None
        stack = MemberStack(states, device)
        expected = count * parameters * 4
        s.measured.update(members=count, parameters=parameters, matrix_bytes=stack.matrix.nbytes, expected=expected)
        s.check("the member matrix holds N·P float32", stack.matrix.nbytes == expected, stack.matrix.nbytes, expected)
        if before is not None:
            torch.cuda.synchronize()
            allocated = torch.cuda.memory_allocated() - before
            # The stack allocates the matrix and one mixing buffer (P floats): (N + 1)·P·4 bytes in all.
            with_buffer = (count + 1) * parameters * 4
            s.measured.update(allocated_bytes=allocated, allocated_over_matrix=round(allocated / expected, 4))
            s.check("device memory of the stack = matrix + mixing buffer ± 5 %",
                    abs(allocated - with_buffer) <= 0.05 * with_buffer, allocated, with_buffer)
        for index in sorted({0, count // 2, count - 1}):
            weights = torch.zeros(count, dtype=torch.float64)
            weights[index] = 1.0
            mixed = {name: t.cpu() for name, t in stack.mix(weights).items()}
            s.check(f"one-hot mix of member {index} equals the member bit for bit", states_equal(mixed, states[index]),
                    None if states_equal(mixed, states[index]) else max_abs_difference(mixed, states[index]))
        uniform = torch.full((count,), 1.0 / count, dtype=torch.float64)
        repeats = 20
        stack.parameters(uniform)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            stack.parameters(uniform)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / repeats
        s.measured.update(mix_seconds=round(seconds, 6), mix_gb_per_second=round(expected / seconds / 1e9, 2))

    def bomf_search(self, s: Section) -> None:
        """One BOMF search (pipeline.fuse) on the stage-2 members, its test evaluation, and the speed of one
        validation pass of a fused model."""
        import torch

        from bomf import pipeline
        from bomf.records import EvaluatedModel, SelectedModel

        members = self.needs_members()
        config = self.config()
        run, data = members.parent, self.prepared(config, "sst2")
        started = time.perf_counter()
        pipeline.fuse(config=config, task="sst2", model="minilm", seed=SEED, data_dir=data, members_dir=members,
                      method="bomf", out_dir=run / "fusion" / "bomf", journal=run / "fusion" / "bomf.journal.jsonl")
        s.measured["fuse_seconds"] = round(time.perf_counter() - started, 2)
        selected = SelectedModel.read(run / "fusion" / "bomf")
        s.check("the search scored its evaluations", selected.evaluations >= 1, selected.evaluations,
                f"≥ 1 (evaluations {self.size['bo_evaluations']}, of which the members' {self.size['members']})")
        s.check("the chosen weights lie on the simplex",
                abs(sum(selected.weights) - 1) < 1e-6 and min(selected.weights) >= -1e-6, selected.weights)
        s.measured.update(validation=selected.validation, weights=[round(w, 4) for w in selected.weights])
        started = time.perf_counter()
        pipeline.evaluate_test(config=config, task="sst2", model="minilm", seed=SEED, method="bomf", data_dir=data,
                               members_dir=members, fusion_dir=run / "fusion" / "bomf", out=run / "test" / "bomf.json")
        s.measured["evaluate_test_seconds"] = round(time.perf_counter() - started, 2)
        record = EvaluatedModel.read(run / "test" / "bomf.json")
        environment = EvaluatedModel.environment_of(run / "test" / "bomf.json")
        s.measured.update(test=record.test, record_environment=environment)
        s.check("the test record says where it was computed", environment.get("device") == self.device,
                environment.get("device"), self.device)
        s.check("the test accuracy is a proportion", 0 <= record.test["accuracy"] <= 1, record.test["accuracy"])
        # Evaluation speed: one validation pass of a fused model (the objective's cost), after a warm-up pass.
        objective = pipeline.member_objective(pipeline.Run(config, "sst2", "minilm", SEED), data, members)
        uniform = torch.full((len(objective.stack),), 1.0 / len(objective.stack), dtype=torch.float64)
        objective(uniform)
        started = time.perf_counter()
        objective(uniform)
        seconds = time.perf_counter() - started
        s.measured.update(validation_examples=len(objective.val), validation_pass_seconds=round(seconds, 3),
                          eval_examples_per_second=round(len(objective.val) / seconds, 1))
        from botorch.acquisition.multi_objective import logei

        s.measured["botorch_fused_kernel"] = getattr(logei, "_C", None) is not None

    def import_members(self, s: Section) -> None:
        """The stage-2 members saved as save_pretrained checkpoints and imported (config imported_runs): the same
        tensors, scored the same on validation."""
        import pandas as pd

        from bomf import pipeline
        from bomf.tasks.models import load_member_state
        from bomf.train.members import load_members

        members = self.needs_members()
        base = self.config()
        run = pipeline.Run(base, "sst2", "minilm", SEED)
        steps = json.loads((members / "members.json").read_text())["steps"]
        directories = []
        for step, state in zip(steps, load_members(members)):
            model = run.load_model()
            load_member_state(model, state)
            directory = self.work / "checkpoints" / f"checkpoint-{step}"
            model.save_pretrained(directory)
            run.tokenizer.save_pretrained(directory)
            directories.append(str(directory))
        imported_runs = {"imported": {"task": "sst2", "base": "minilm", "members": directories}}
        config = self.config(imported_runs=imported_runs)
        out = self.work / "results" / "sst2" / "imported" / f"seed{SEED}" / "members"
        started = time.perf_counter()
        pipeline.import_members(config=config, task="sst2", model="imported", seed=SEED,
                                data_dir=self.prepared(config, "sst2"), out_dir=out)
        s.measured["import_seconds"] = round(time.perf_counter() - started, 2)
        imported, original = load_members(out), load_members(members)
        s.check("every checkpoint became a member", len(imported) == len(original), len(imported), len(original))
        equal = [states_equal(a, b) for a, b in zip(imported, original)]
        s.check("imported members equal the saved ones bit for bit", all(equal), equal)
        ours = pd.read_csv(members / "trajectory.csv")["val_loss"]
        theirs = pd.read_csv(out / "trajectory.csv")["val_loss"]
        difference = float((ours - theirs).abs().max())
        s.measured.update(val_loss_stage2=ours.tolist(), val_loss_imported=theirs.tolist())
        s.check("imported members score as in stage 2 (validation loss)", difference <= 1e-5, difference, "≤ 1e-5")

    def lora_generation(self, s: Section) -> None:
        """Stage 2 of the tiny Llama with LoRA on E2E, a fusion of its adapters and greedy generation on test."""
        from bomf import pipeline
        from bomf.records import EvaluatedModel

        config = self.config(generation=True)
        started = time.perf_counter()
        members = self.finetune(config, "e2e", "llama", "members")
        s.measured["finetune_seconds"] = round(time.perf_counter() - started, 2)
        run, data = members.parent, self.prepared(config, "e2e")
        pipeline.fuse(config=config, task="e2e", model="llama", seed=SEED, data_dir=data, members_dir=members,
                      method="swa", out_dir=run / "fusion" / "swa", journal=run / "fusion" / "swa.journal.jsonl")
        started = time.perf_counter()
        pipeline.evaluate_test(config=config, task="e2e", model="llama", seed=SEED, method="swa", data_dir=data,
                               members_dir=members, fusion_dir=run / "fusion" / "swa", out=run / "test" / "swa.json")
        seconds = time.perf_counter() - started
        record = EvaluatedModel.read(run / "test" / "swa.json")
        s.measured.update(evaluate_test_seconds=round(seconds, 2), test=record.test,
                          generated_examples_per_second=round(len(record.predictions) / seconds, 2),
                          predictions=record.predictions[:3])
        s.check("one generation per test example", len(record.predictions) == record.test_size,
                len(record.predictions), record.test_size)
        s.check("the generations are text", all(isinstance(p, str) for p in record.predictions))
        s.check("BLEU and ROUGE-L are finite", all(math.isfinite(record.test[m]) for m in ("bleu", "rougeL")),
                record.test)

    def determinism(self, s: Section) -> None:
        """The same short training twice, in one process, with the same seed: bit-identical parameters."""
        from bomf import pipeline
        from bomf.settings import Hyperparameters, OptimConfig
        from bomf.tasks.models import member_state
        from bomf.train.training import fine_tune

        config = self.config()
        run = pipeline.Run(config, "sst2", "minilm", SEED)
        data = run.splits(self.prepared(config, "sst2"), ("train", "val"), max_train=self.size["determinism_train"])
        hp = Hyperparameters(LEARNING_RATE["minilm"], self.size["batch_size"], 0.1, 0.01)
        states = []
        for _ in range(2):
            model = run.load_model()
            fine_tune(model, data["train"], data["val"], run.task, hp, OptimConfig.from_config(config["optim"]),
                      1, SEED, run.device, precision=run.compute.training)
            states.append(member_state(model))
        same = states_equal(*states)
        differing = [name for name in states[0] if not same and not states[0][name].equal(states[1][name])]
        s.measured.update(training_precision=run.compute.training, tensors=len(states[0]),
                          differing_tensors=len(differing), first_differing=differing[:5])
        s.check("two trainings with one seed give bit-identical parameters", same,
                None if same else max_abs_difference(*states), "identical")

    def scoring_precision(self, s: Section) -> None:
        """Scores of fused points in float32 (the pipeline's scoring) against bf16 autocast (and TF32 on CUDA),
        beside the spread of the members' own scores: how much a lower scoring precision would blur what the
        search compares. SST-2 (classification) and STS-B (regression: distinct predictions)."""
        import numpy as np
        import torch

        from bomf import pipeline

        members = {"sst2": self.needs_members()}
        config = self.config()
        started = time.perf_counter()
        members["stsb"] = self.finetune(config, "stsb", "minilm", "members")
        s.measured["stsb_finetune_seconds"] = round(time.perf_counter() - started, 2)
        for task, members_dir in members.items():
            objective = pipeline.member_objective(pipeline.Run(config, task, "minilm", SEED),
                                                  self.prepared(config, task), members_dir)
            count, metric = len(objective.stack), objective.task.primary_metric
            # The members (one-hot), their average and random points of the simplex.
            torch.manual_seed(SEED)
            points = [*torch.eye(count, dtype=torch.float64), torch.full((count,), 1.0 / count, dtype=torch.float64),
                      *torch.distributions.Dirichlet(torch.ones(count, dtype=torch.float64)).sample(
                          (self.size["fused_points"],))]
            variants = {"bf16_autocast": lambda: torch.autocast(objective.device.type, dtype=torch.bfloat16)}
            if objective.device.type == "cuda":
                variants["tf32"] = tf32_matmuls
            rows = []
            for index, point in enumerate(points):
                objective.stack.load_into(objective.model, point)
                scores, predictions = objective.val.evaluate(objective.model, list(objective.task.metrics),
                                                             objective.batch_size, objective.device)
                again, _ = objective.val.evaluate(objective.model, list(objective.task.metrics),
                                                  objective.batch_size, objective.device)
                row = {"point": index if index < count else ("uniform" if index == count else "random"),
                       "loss": scores["loss"], metric: scores[metric], "repeatable": scores == again}
                for name, context in variants.items():
                    with context():
                        other, other_predictions = objective.val.evaluate(
                            objective.model, list(objective.task.metrics), objective.batch_size, objective.device)
                    row[f"{name}_loss_difference"] = abs(other["loss"] - scores["loss"])
                    row[f"{name}_{metric}_difference"] = abs(other[metric] - scores[metric])
                    if objective.task.is_regression:
                        row[f"{name}_max_prediction_difference"] = float(
                            np.abs(np.asarray(other_predictions) - np.asarray(predictions)).max())
                        row[f"{name}_distinct_predictions"] = len(np.unique(other_predictions))
                        row["fp32_distinct_predictions"] = len(np.unique(predictions))
                rows.append(row)
            member_rows = rows[:count]
            spread = {"loss": max(r["loss"] for r in member_rows) - min(r["loss"] for r in member_rows),
                      metric: max(r[metric] for r in member_rows) - min(r[metric] for r in member_rows)}
            summary = {"members_spread": spread, "points": rows}
            for name in variants:
                for key in ("loss", metric):
                    worst = max(r[f"{name}_{key}_difference"] for r in rows)
                    summary[f"{name}_max_{key}_difference"] = worst
                    summary[f"{name}_{key}_difference_over_member_spread"] = (
                        worst / spread[key] if spread[key] > 0 else None)
            s.measured[task] = summary
            s.check(f"{task}: float32 scoring of a point is repeatable", all(r["repeatable"] for r in rows),
                    [r["repeatable"] for r in rows])


@contextlib.contextmanager
def tf32_matmuls():
    """TF32 matmuls for a block (precision.tf32: true), restored after."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def stand_in_for_lxml() -> str | None:
    """sacrebleu imports lxml.etree when imported, only to read WMT XML test sets; lxml is compiled for each
    Python version and too large to carry (gpu_bundle.py). Where the host lacks it, an empty module stands in
    for it, so BLEU (which never touches it) is computed; returns what was done."""
    if importlib.util.find_spec("lxml") is not None:
        return None
    import types

    lxml = types.ModuleType("lxml")
    lxml.etree = types.ModuleType("lxml.etree")
    sys.modules.update({"lxml": lxml, "lxml.etree": lxml.etree})
    return "lxml missing: an empty stand-in module (sacrebleu needs it only for WMT XML files, not for BLEU)"


def run_job(path: Path) -> None:
    """A pipeline job by keyword, in this process (the section that kills one runs it so)."""
    from bomf import pipeline

    job = json.loads(path.read_text())
    getattr(pipeline, job["job"])(**job["kwargs"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=sorted(SIZES), default="cuda")
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--installed", type=Path, help="what gpu_check.sh installed from the bundle (JSON)")
    parser.add_argument("--setup", default="", help="what went differently in gpu_check.sh's setup")
    parser.add_argument("--budget", type=float, help="seconds; later sections are skipped once spent")
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    stand_in = stand_in_for_lxml()
    if args.job is not None:
        run_job(args.job)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = Report(args.out.resolve(), args.device, args.budget)
    check = Check(args, report)
    report.data.update(workdir=str(check.work), stand_ins=[stand_in] if stand_in else [])
    report.run("environment", check.environment, "torch")
    models = report.run("models", check.build_models, "torch", "transformers")
    if models is not None and check.models:
        report.run("finetune_resume", check.finetune_resume, *PIPELINE)
        report.run("member_stack", check.member_stack, "torch", "transformers", "numpy", "pandas")
        report.run("bomf_search", check.bomf_search, *PIPELINE, "botorch")
        report.run("import_members", check.import_members, *PIPELINE)
        report.run("lora_generation", check.lora_generation, *PIPELINE, "peft", "sacrebleu", "rouge_score", "nltk")
        report.run("determinism", check.determinism, *PIPELINE)
        report.run("scoring_precision", check.scoring_precision, *PIPELINE)
    report.data["finished"] = True
    report.write()
    statuses = {section["name"]: section["status"] for section in report.data["sections"]}
    print(json.dumps(statuses), f"{report.data['seconds']} s; report {args.out}", flush=True)
    return 0 if all(status == "passed" for status in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
