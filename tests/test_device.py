"""The device and precision policy (bomf.device), and every job function run on a stand-in CUDA device
(tests/simulated_cuda.py), so the code paths that only run on a GPU are reached on this CPU machine: a model
or a batch left on the wrong device fails here as it would on a GPU."""

import copy
import json
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, GLUE_DIR, REPO, TINY_GENERATION_CONFIG, TINY_QA_CONFIG, tiny_config, write_tiny_config
from simulated_cuda import CAPABILITY, NAME, on_cuda, simulated_cuda

from bomf import pipeline
from bomf.config import validate_config
from bomf.device import (CUBLAS_WORKSPACE, Compute, DeviceError, local_problem, resolve_device,
                         training_precision)
from bomf.fuse.baselines import grid_points
from bomf.io import read_json
from bomf.records import EvaluatedModel, HpoChoice
from bomf.runtime import seed_everything
from bomf.settings import Hyperparameters, OptimConfig
from bomf.tasks.kinds import kind_of
from bomf.tasks.models import load_tokenizer
from bomf.tasks.readers import read_glue_tsv
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import SequenceData
from bomf.train.training import fine_tune

CPU = torch.device("cpu")
STSB = GLUE_TASKS["stsb"]
GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


@pytest.fixture
def no_gpu_given(monkeypatch):
    for variable in GPU_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def cuda_build(monkeypatch, available: bool, warning: str | None = None):
    """torch as a CUDA build whose is_available() answers ``available`` (warning as torch does when it cannot)."""
    def is_available():
        if warning:
            warnings.warn(warning)
        return available

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", is_available)


def test_cpu_is_the_cpu_and_auto_is_the_cpu_without_cuda(no_gpu_given):
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == CPU  # this machine's torch has no CUDA, and no GPU was given


@pytest.mark.parametrize("variable", GPU_VARIABLES)
def test_a_job_given_a_gpu_it_cannot_use_stops(no_gpu_given, monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    with pytest.raises(DeviceError, match=rf"given a GPU \({variable}=0\) but cannot use it: torch .* build without "
                                          r"CUDA .* set device: cpu"):
        resolve_device("auto")
    assert resolve_device("cpu") == CPU  # what the message says to do


def test_device_cuda_without_cuda_in_torch_stops(no_gpu_given):
    with pytest.raises(DeviceError, match=r"^device: cuda, but torch \S+ is a build without CUDA "
                                          r"\(torch.version.cuda is None\): install a CUDA build"):
        resolve_device("cuda")


def test_a_driver_too_old_is_named(no_gpu_given, monkeypatch):
    cuda_build(monkeypatch, False, "CUDA initialization: The NVIDIA driver on your system is too old "
                                   "(found version 11040).")
    with pytest.raises(DeviceError, match=r"device: cuda, but torch \S+ \(CUDA 12.8\) cannot use the NVIDIA "
                                          r"driver: .*too old \(found version 11040\)"):
        resolve_device("cuda")


def test_no_visible_device_is_named(no_gpu_given, monkeypatch):
    cuda_build(monkeypatch, False)
    monkeypatch.setenv("SLURM_JOB_GPUS", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceError, match=r"given a GPU \(SLURM_JOB_GPUS=3\) but cannot use it: no CUDA device is "
                                          r"visible .*CUDA_VISIBLE_DEVICES=''"):
        resolve_device("auto")


def test_cublas_workspace_is_set_before_cuda_is_touched(no_gpu_given, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: seen.append(dict(__import__("os").environ)) or False)
    with pytest.raises(DeviceError):
        resolve_device("cuda")
    assert seen and seen[0]["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own choice is kept
    resolve_device("cpu")
    assert __import__("os").environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.parametrize("capability, setting, expected", [
    ((9, 0), "auto", "bf16"), ((8, 0), "auto", "bf16"), ((7, 5), "auto", "fp16"), ((7, 0), "auto", "fp16"),
    ((6, 1), "auto", "fp32"), ((7, 0), "fp16", "fp16"), ((7, 0), "fp32", "fp32"), ((9, 0), "fp16", "fp16")])
def test_training_precision_is_what_the_gpu_does_natively(monkeypatch, capability, setting, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert training_precision(setting, torch.device("cuda", 0)) == expected


def test_bf16_on_a_gpu_without_native_bf16_and_half_precision_on_the_cpu_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    with pytest.raises(DeviceError, match=r"precision.training: bf16, but Tesla V100-SXM2-32GB \(compute capability "
                                          r"7.0\) has no native bf16"):
        training_precision("bf16", torch.device("cuda", 0))
    for setting in ("bf16", "fp16"):
        with pytest.raises(DeviceError, match=rf"precision.training: {setting} needs a CUDA device"):
            training_precision(setting, CPU)
    assert training_precision("auto", CPU) == "fp32"


def test_fp16_training_on_an_older_gpu_scales_its_loss_and_resumes_bit_for_bit(monkeypatch, tiny_model_dir):
    """A GPU without native bf16 (a V100: compute capability 7.0) trains in fp16 with a loss scaler, whose
    state is part of the resume state: resuming from it ends where the uninterrupted run ends."""
    rte = GLUE_TASKS["rte"]
    data = SequenceData(read_glue_tsv(rte, GLUE_DIR / "RTE" / "train.tsv")[:32], load_tokenizer(str(tiny_model_dir)),
                        64, rte)

    def train(device, precision, **kwargs):
        seed_everything(0)
        model = kind_of(rte).load_model({"source": str(tiny_model_dir)}, rte, device)
        fine_tune(model, data, data, rte, Hyperparameters(1e-3, 8, 0.0, 0.0),
                  OptimConfig("linear", 1e-6, (0.9, 0.98), 8, 16), 2, 0, device, eval_steps=[4, 8],
                  precision=precision, **kwargs)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        return {name: t.clone() for name, t in model.state_dict().items()}

    states = []
    with simulated_cuda(monkeypatch):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
        device = resolve_device("cuda")
        precision = training_precision("auto", device)
        assert precision == "fp16"
        # A state holds the live tensors (a job writes it at once): keep a copy of the first.
        uninterrupted = train(device, precision, on_state=lambda state: states.append(copy.deepcopy(state)))
        resumed = train(device, precision, resume=states[0])
    assert states[0].step == 4 and states[0].scaler["scale"] > 1.0  # the loss was scaled
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name


def test_scores_on_the_gpu_are_float32_scores(monkeypatch, tiny_model_dir):
    """Validation, the fusion objective and test run in float32 on the GPU too: a regression head's
    predictions are the CPU's, not rounded to bf16 (steps of 1/64 to 1/32 near 1 to 5)."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = SequenceData(read_glue_tsv(STSB, GLUE_DIR / "STS-B" / "dev.tsv")[:48], tokenizer, 64, STSB)
    seed_everything(0)
    model = kind_of(STSB).load_model({"source": str(tiny_model_dir)}, STSB, CPU)
    with torch.no_grad():  # predictions spread over a range where bf16's steps are coarse
        model.classifier.bias.fill_(3.0)
        model.classifier.weight.mul_(20.0)
    scores, predictions = data.evaluate(model, list(STSB.metrics), 16, CPU)
    with simulated_cuda(monkeypatch):
        device = resolve_device("cuda")
        on_gpu = model.to(device)
        assert all(on_cuda(p) for p in on_gpu.parameters())
        gpu_scores, gpu_predictions = data.evaluate(on_gpu, list(STSB.metrics), 16, device)
    assert len(set(predictions.tolist())) == len(predictions)  # no ties for bf16 rounding to make
    np.testing.assert_array_equal(gpu_predictions, predictions)
    assert gpu_scores == scores


def test_gpu_batches_are_collated_by_a_worker_beside_the_device(monkeypatch, tiny_model_dir):
    """On CUDA the next batches are collated (into pinned memory) by a worker thread while the device computes,
    and arrive on the device equal to the CPU's; on the CPU they are collated in line."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = SequenceData(read_glue_tsv(STSB, GLUE_DIR / "STS-B" / "dev.tsv")[:20], tokenizer, 64, STSB)
    index_lists = [[3, 1, 4], [1, 5, 9, 2], [6, 5], [3, 5, 8, 9, 7]]
    collate, threads = data.collate, []

    def recording(indices):
        threads.append(threading.current_thread().name)
        return collate(indices)

    monkeypatch.setattr(data, "collate", recording)
    expected = [data.batch(indices, CPU) for indices in index_lists]
    assert set(threads) == {threading.current_thread().name}
    threads.clear()
    with simulated_cuda(monkeypatch):
        batches = list(data.batches(index_lists, resolve_device("cuda")))
    assert len(threads) == len(index_lists) and all(name.startswith("collate") for name in threads)
    for batch, reference in zip(batches, expected, strict=True):
        assert batch.keys() == reference.keys()
        assert all(on_cuda(batch[key]) and torch.equal(batch[key].cpu(), reference[key]) for key in batch)


def test_a_half_precision_checkpoint_is_loaded_in_float32(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.bfloat16)
    saved.save_pretrained(tmp_path)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    kind = kind_of(STSB)
    for model in (kind.load_model({"source": str(tmp_path)}, STSB, CPU), kind.load_saved(tmp_path, STSB)):
        assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.fixture(scope="module")
def gpu_run(tiny_model_dir, tmp_path_factory):
    """Every job function that loads a model, run in-process on the stand-in CUDA device (device: auto) over
    the tiny config's STS-B run, the import of two exported models included."""
    monkeypatch = pytest.MonkeyPatch()
    workdir = tmp_path_factory.mktemp("gpu-run")
    config = validate_config(tiny_config(
        tiny_model_dir, tasks=["stsb"], device="auto", fusion={"evaluations": 3},
        figures={"landscape": {"enabled": True, "size": 3, "low": 0.0, "high": 1.0}}))
    run, data = workdir / "run", workdir / "data"
    for variable in GPU_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    try:
        with simulated_cuda(monkeypatch):
            yield from _jobs(config, run, data, workdir)
    finally:
        monkeypatch.undo()


def _jobs(config, run, data, workdir):
    job = {"config": config, "task": "stsb", "model": "tiny", "seed": 0}
    pipeline.prepare_data(config, "stsb", data)
    pipeline.hpo_suggest(config, "stsb", 0, 0, [], run / "hpo/round0/suggest.json")
    pipeline.hpo_trial(**job, data_dir=data, suggest_file=run / "hpo/round0/suggest.json", trial_index=0,
                       out=run / "hpo/round0/trial0.json", staging_dir=run / "hpo/round0/trial0.resume",
                       checkpoint_seconds=1800)
    pipeline.hpo_select([run / "hpo/round0/trial0.json"], run / "hpo/trials.csv", run / "hpo/best.json")
    pipeline.finetune(**job, data_dir=data, best_file=run / "hpo/best.json", out_dir=run / "members",
                      staging_dir=run / "members.resume", checkpoint_seconds=1800)
    methods = ("bomf", "swa", "greedy_soup", "learned_soup", "twa", "otfusion", "ema", "ties", "best_member")
    for method in methods:
        pipeline.fuse(**job, data_dir=data, members_dir=run / "members", method=method,
                      out_dir=run / f"fusion/{method}", journal=run / f"fusion/{method}.journal.jsonl")
    for method in ("bomf", "ties"):
        pipeline.evaluate_test(**job, method=method, data_dir=data, members_dir=run / "members",
                               fusion_dir=run / f"fusion/{method}", out=run / f"test/{method}.json")
        pipeline.export_model(**job, method=method, members_dir=run / "members", fusion_dir=run / f"fusion/{method}",
                              test_file=run / f"test/{method}.json", commands_log=workdir / "commands.log",
                              out_dir=workdir / f"export/{method}")
    points = len(grid_points(config["baselines"]["grid"]))
    for point in range(points):
        pipeline.grid_trial(**job, data_dir=data, point_index=point, frozen_layers=0,
                            out=run / f"grid/frozen0/point{point}.json",
                            staging_dir=run / f"grid/frozen0/point{point}.resume", checkpoint_seconds=1800,
                            out_checkpoint=run / f"grid/frozen0/point{point}.safetensors")
    pipeline.grid_finetune(**job, trial_files=[run / f"grid/frozen0/point{p}.json" for p in range(points)],
                           checkpoints=[run / f"grid/frozen0/point{p}.safetensors" for p in range(points)],
                           out_dir=run / "fusion/grid_finetune")
    pipeline.hpbo_full(**job, data_dir=data, best_file=run / "hpo/best.json", out_dir=run / "fusion/hpbo_full",
                       staging_dir=run / "fusion/hpbo_full.resume", checkpoint_seconds=1800)
    pipeline.oracle_subset(**job, data_dir=data, members_dir=run / "members", out_dir=run / "fusion/oracle_subset",
                           journal=run / "fusion/oracle_subset.journal.jsonl")
    pipeline.loss_landscape(**job, data_dir=data, members_dir=run / "members",
                            fusion_dirs={"swa": run / "fusion/swa"}, out_dir=run / "landscape",
                            journal=run / "landscape.journal.jsonl")
    # A user's own checkpoints: the exported models as members of an imported run.
    no_landscape = {**config["figures"], "landscape": {**config["figures"]["landscape"], "enabled": False}}
    imported = validate_config({**config, "figures": no_landscape, "imported_runs": {"mine": {
        "task": "stsb", "base": "tiny", "members": [str(workdir / "export/bomf"), str(workdir / "export/ties")]}}})
    pipeline.import_members(config=imported, task="stsb", model="mine", seed=0, data_dir=data,
                            out_dir=workdir / "imported/members")
    yield run


def test_every_job_runs_on_the_gpu_without_mixing_devices(gpu_run):
    """Reaching here is the test: a job that scored a model left on the CPU, or a batch left behind, would have
    raised (the import job did, scoring its CPU model on GPU batches). Each record names the GPU and precision."""
    described = {"device": "cuda", "device_name": NAME, "capability": f"{CAPABILITY[0]}.{CAPABILITY[1]}",
                 "torch_cuda": "12.8", "training_precision": "bf16", "scoring_precision": "fp32", "tf32": False}
    records = [gpu_run / "hpo/round0/trial0.json", gpu_run / "test/bomf.json", gpu_run / "fusion/bomf/weights.json",
               gpu_run / "grid/frozen0/point0.json", gpu_run / "fusion/hpbo_full/weights.json",
               gpu_run / "members/environment.json"]
    for path in records:
        environment = read_json(path)
        environment = environment.get("environment", environment)
        assert {key: environment[key] for key in described} == described, path
    assert len(read_json(gpu_run.parent / "imported/members/members.json")["members"]) == 2


@pytest.mark.parametrize("task, base", [("squad_v2", TINY_QA_CONFIG), ("e2e", TINY_GENERATION_CONFIG)])
def test_the_text_kinds_run_on_the_gpu_without_mixing_devices(tmp_path, monkeypatch, tiny_model_dir, tiny_llama_dir,
                                                              task, base):
    """Extractive QA (span decoding) and LoRA generation (left-padded greedy decoding): stage 2, a fusion and
    the test evaluation on the stand-in CUDA device."""
    model_dir = tiny_llama_dir if task == "e2e" else tiny_model_dir
    # Placement is what is tested: the generation run trained and scored as little as the config check allows
    # (its LM head over SmolLM2's 49k-token vocabulary is most of its time).
    smaller = {"data": {"val_size": 4, "max_train": 12, "max_test": 4}, "finetune": {"members": 2},
               "hpo": {"space": {"batch_size": {"low": 4, "high": 8}}}, "baselines": {"grid": {"batch_sizes": [8]}},
               "figures": {"landscape": {"enabled": False}}} if task == "e2e" else {}
    config = validate_config(tiny_config(model_dir, base, tasks=[task], device="auto", **smaller))
    job = {"config": config, "task": task, "model": "tiny", "seed": 0}
    data, run = tmp_path / "data", tmp_path / "run"
    pipeline.prepare_data(config, task, data)
    HpoChoice({"learning_rate": 1e-3, "batch_size": 8}, 0.0, 0.0, "", 0, "").write(run / "hpo/best.json")
    for variable in GPU_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    with simulated_cuda(monkeypatch):
        pipeline.finetune(**job, data_dir=data, best_file=run / "hpo/best.json", out_dir=run / "members",
                          staging_dir=run / "members.resume", checkpoint_seconds=1800)
        pipeline.fuse(**job, data_dir=data, members_dir=run / "members", method="swa", out_dir=run / "fusion/swa",
                      journal=run / "fusion/swa.journal.jsonl")
        pipeline.evaluate_test(**job, method="swa", data_dir=data, members_dir=run / "members",
                               fusion_dir=run / "fusion/swa", out=run / "test/swa.json")
    assert EvaluatedModel.environment_of(run / "test/swa.json")["device"] == "cuda"


def test_the_fuse_journal_is_tied_to_the_device_and_precision(tmp_path, tiny_model_dir):
    """A resumed search never mixes scores of another device or precision: they are part of its identity."""
    compute = Compute(CPU, "fp32", False)
    assert compute.scoring_identity() == {"device": "cpu", "scoring_precision": "fp32", "tf32": False,
                                          "frozen_base": "fp32"}
    assert Compute(CPU, "fp32", True).scoring_identity() != compute.scoring_identity()
    # A LoRA model's frozen base is held in the training precision on a GPU (bomf.device.frozen_dtype).
    gpu = torch.device("cuda", 0)
    assert Compute(gpu, "bf16", False).scoring_identity() != Compute(gpu, "fp16", False).scoring_identity()


def test_provenance_lists_what_the_tests_were_computed_on(gpu_run, tmp_path):
    pipeline.summarise_run(test_files=[gpu_run / "test/bomf.json", gpu_run / "test/ties.json"],
                           fusion_dirs=[gpu_run / "fusion/bomf", gpu_run / "fusion/ties"],
                           split_file=gpu_run.parent / "data/split.json", out_csv=tmp_path / "summary.csv",
                           out_provenance=tmp_path / "provenance.json")
    (computed,) = read_json(tmp_path / "provenance.json")["computed_on"]
    assert computed["device"] == "cuda" and computed["training_precision"] == "bf16"


@pytest.mark.parametrize("setting, environment", [("cuda", {}), ("auto", {"CUDA_VISIBLE_DEVICES": "0"})])
def test_a_local_run_that_cannot_compute_as_configured_stops_before_any_job(tmp_path, tiny_model_dir, setting,
                                                                            environment):
    """``device: cuda`` on this CPU machine, or a GPU given that torch cannot use: one line, nothing written."""
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir, device=setting)
    env = {k: v for k, v in __import__("os").environ.items() if k not in GPU_VARIABLES}
    result = subprocess.run([sys.executable, "-m", "snakemake", "all", "--snakefile", str(REPO / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile", str(config), "--cores", "1"],
                            capture_output=True, text=True, env={**env, **environment})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("bomf:")]
    assert len(lines) == 1 and "build without CUDA" in lines[0], result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".snakemake", "config.yaml"]
    assert not any(p.is_file() for p in (tmp_path / ".snakemake").rglob("*") if "log" not in p.parts)
    config_dict = validate_config(tiny_config(tiny_model_dir, device="cpu"))
    assert local_problem(config_dict) is None


def test_a_lora_base_is_held_in_the_training_precision_on_the_gpu_its_adapters_in_float32(monkeypatch,
                                                                                         tiny_llama_dir, tmp_path):
    """A run that trains in bf16 on a GPU loads its LoRA model's frozen base in bf16 (half its memory) and scores
    with it; the adapters, what members hold and fusion mixes, stay float32, and so does an export. On the CPU
    every weight is float32, whatever precision is asked for."""
    from bomf.tasks.generation import GenerationData
    from bomf.tasks.models import member_state, save_model
    from bomf.tasks.readers import read_e2e_csv
    from bomf.tasks.registry import TEXT_TASKS

    e2e = TEXT_TASKS["e2e"]
    spec = {"source": str(tiny_llama_dir),
            "lora": {"rank": 4, "proxy_rank": 2, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}
    tokenizer = load_tokenizer(str(tiny_llama_dir))
    data = GenerationData(read_e2e_csv(DATA_DIR / "e2e" / "devset.csv")[:4], tokenizer, e2e.prompt, 96, 4, False)

    def dtypes(model) -> tuple[set, set]:
        state = model.state_dict()
        adapters = set(member_state(model))
        return ({t.dtype for n, t in state.items() if n not in adapters and t.is_floating_point()},
                {state[n].dtype for n in adapters})

    for precision in ("fp32", "bf16"):
        assert dtypes(kind_of(e2e).load_model(spec, e2e, CPU, precision=precision)) == ({torch.float32},
                                                                                       {torch.float32})
    with simulated_cuda(monkeypatch):
        device = resolve_device("cuda")
        precision = training_precision("auto", device)
        assert precision == "bf16"
        model = kind_of(e2e).load_model(spec, e2e, device, precision=precision)
        assert all(on_cuda(p) for p in model.parameters())
        assert dtypes(model) == ({torch.bfloat16}, {torch.float32})
        assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
        scores, _ = data.evaluate(model, ["rougeL"], 4, device)  # float32 adapters on a bf16 base, no autocast
        assert np.isfinite(scores["loss"])
        saved = save_model(model.cpu(), tokenizer, tmp_path)
    assert {p.dtype for p in saved.parameters()} == {torch.float32}
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float32"
