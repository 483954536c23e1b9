"""Bring your own members: checkpoints written by a real transformers.Trainer run (and PEFT adapters) fused as
a run's members, checked before any fusion, through the whole DAG to the tables and an exported model."""

import copy
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_CONFIG, TINY_GENERATION_CONFIG, tiny_config
from safetensors.torch import load_file, save_file
from test_pipeline import FIGURES, TABLES, snakemake

from bomf.config import ConfigError, validate_config
from bomf.io import read_jsonl
from bomf.report.diagnostics import TRIVIAL
from bomf.train.checkpoints import CheckpointError, find_checkpoints

TRAINER_STEPS = (4, 8, 12, 16)  # 64 training pairs, batch 8, 2 epochs, a checkpoint every 4 steps


def trainer_checkpoints(out_dir: Path, model, tokenizer, examples: list, collator, steps: int) -> Path:
    """``model`` fine-tuned by transformers.Trainer, saving a checkpoint-<step> directory every ``steps``."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(out_dir), per_device_train_batch_size=8, num_train_epochs=2,
                             learning_rate=1e-3, save_strategy="steps", save_steps=steps, save_only_model=True,
                             logging_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=examples, data_collator=collator,
            processing_class=tokenizer).train()
    return out_dir


def prepared_data(workdir: Path, config: dict, task: str) -> Path:
    """The task's splits as the pipeline's data job writes them: a careful user fine-tunes on this train split."""
    from bomf.pipeline import prepare_data

    out = workdir / "results/data" / task
    prepare_data(validate_config(copy.deepcopy(config)), task, out)
    return out


@pytest.fixture(scope="module")
def mrpc_trainer_run(tmp_path_factory, tiny_model_dir):
    """Four checkpoints of a Trainer fine-tune of the tiny BERT on the pipeline's MRPC train split."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    workdir = tmp_path_factory.mktemp("imported")
    config = tiny_config(tiny_model_dir, tasks=["mrpc"])
    data = prepared_data(workdir, config, "mrpc")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [{**tokenizer(*e["text"], truncation=True, max_length=64), "labels": e["label"]}
                for e in read_jsonl(data / "train.jsonl")]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    trainer_checkpoints(workdir / "trainer", model, tokenizer, examples, DataCollatorWithPadding(tokenizer), 4)
    return workdir


def imported_config(model_dir: Path, members: list[str], base: Path = TINY_CONFIG, task: str = "mrpc",
                    **overrides) -> dict:
    config = tiny_config(model_dir, base, tasks=[], models=[], **overrides)
    config["imported_runs"] = {"trainer-run": {"task": task, "base": "tiny", "members": members}}
    return config


def test_checkpoints_are_found_in_training_step_order(tmp_path):
    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-4"):
        (tmp_path / name).mkdir()
    found = find_checkpoints([str(tmp_path / "checkpoint-*")])
    assert [p.name for p in found] == ["checkpoint-2", "checkpoint-4", "checkpoint-10"]  # not by name
    # trainer_state.json's global_step counts over the directory's name; a directory named twice is kept once.
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 12}))
    found = find_checkpoints([str(tmp_path / "checkpoint-*"), str(tmp_path / "checkpoint-4")])
    assert [p.name for p in found] == ["checkpoint-4", "checkpoint-10", "checkpoint-2"]
    (tmp_path / "final").mkdir()  # a step unknown: the order given
    given = [str(tmp_path / "checkpoint-4"), str(tmp_path / "final"), str(tmp_path / "checkpoint-2")]
    assert [str(p) for p in find_checkpoints(given)] == given


def test_imported_run_config_names_each_problem(tmp_path, tiny_model_dir, mrpc_trainer_run):
    checkpoints = str(mrpc_trainer_run / "trainer/checkpoint-*")
    config = imported_config(tiny_model_dir, [checkpoints])
    validate_config(copy.deepcopy(config))  # the valid one

    def problems(edit) -> str:
        edited = copy.deepcopy(config)
        edit(edited["imported_runs"]["trainer-run"], edited)
        with pytest.raises(ConfigError) as error:
            validate_config(edited)
        return str(error.value)

    (tmp_path / "empty").mkdir()
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    assert "imported_runs.trainer-run.members: 'nowhere/checkpoint-*' matches nothing" in problems(
        lambda run, c: run.update(members=["nowhere/checkpoint-*"]))
    message = problems(lambda run, c: run.update(members=[checkpoints, str(tmp_path / "empty"), str(tmp_path / "adapter"),
                                                          str(tmp_path / "missing")]))
    assert f"'{tmp_path / 'empty'}' holds no model.safetensors" in message
    assert f"'{tmp_path / 'adapter'}' holds an adapter, but task mrpc fuses whole fine-tuned models" in message
    assert f"'{tmp_path / 'missing'}' is not a directory" in message
    trainer_output = mrpc_trainer_run / "trainer"
    assert f"'{trainer_output}' holds no model.safetensors or model.safetensors.index.json nor " \
           f"adapter_model.safetensors; it holds Trainer checkpoints (checkpoint-4, checkpoint-8, checkpoint-12, ...): " \
           f"name them, e.g. '{trainer_output / 'checkpoint-*'}'" in problems(
               lambda run, c: run.update(members=[str(trainer_output)]))
    assert "imported_runs.trainer-run.base: 'roberta' is not in model_catalog" in problems(
        lambda run, c: run.update(base="roberta"))
    assert "imported_runs.trainer-run.task: unknown task 'paraphrase'" in problems(
        lambda run, c: run.update(task="paraphrase"))
    assert "imported_runs.tiny: 'tiny' is a model_catalog entry's name" in problems(
        lambda run, c: c.update(imported_runs={"tiny": run}))
    assert "2 checkpoint(s) found, the landscape's plane needs three" in problems(
        lambda run, c: run.update(members=[checkpoints.replace("*", "4"), checkpoints.replace("*", "8")]))
    assert "fusion.initial_points: 4 (null: one per checkpoint of imported_runs.trainer-run) exceeds" in problems(
        lambda run, c: c["fusion"].update(initial_points=None, evaluations=3))


def test_trainer_checkpoints_become_members(tmp_path, tiny_model_dir, mrpc_trainer_run):
    from bomf.pipeline import import_members

    config = validate_config(imported_config(tiny_model_dir, [str(mrpc_trainer_run / "trainer/checkpoint-*")]))
    out = tmp_path / "members"
    import_members(config, "mrpc", "trainer-run", 0, mrpc_trainer_run / "results/data/mrpc", out)
    manifest = json.loads((out / "members.json").read_text())
    assert manifest["steps"] == list(TRAINER_STEPS) and len(manifest["members"]) == 4
    checkpoints = [load_file(str(mrpc_trainer_run / f"trainer/checkpoint-{step}/model.safetensors"))
                   for step in TRAINER_STEPS]
    for name, checkpoint in zip(manifest["members"], checkpoints):
        member = load_file(str(out / name))
        assert member.keys() == checkpoint.keys()
        assert all(torch.equal(member[key], checkpoint[key]) for key in member)
    trajectory = pd.read_csv(out / "trajectory.csv")
    assert list(trajectory["step"]) == list(TRAINER_STEPS) and trajectory["val_f1"].between(0, 1).all()
    # θ₀ of the merges: the pretrained encoder where the base sets it, the members' mean for the fresh head.
    base = load_file(str(out / "base.safetensors"))
    pretrained = load_file(str(tiny_model_dir / "model.safetensors"))
    assert torch.equal(base["bert.encoder.layer.0.attention.self.query.weight"],
                       pretrained["encoder.layer.0.attention.self.query.weight"])
    mean = torch.stack([c["classifier.weight"] for c in checkpoints]).mean(0)
    torch.testing.assert_close(base["classifier.weight"], mean)


def test_mismatched_checkpoints_are_named_by_file_and_tensor(tmp_path, tiny_model_dir, mrpc_trainer_run):
    from transformers import AutoTokenizer

    from bomf.pipeline import import_members

    trainer = mrpc_trainer_run / "trainer"
    copies = [shutil.copytree(trainer / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}") for step in TRAINER_STEPS]
    weights = [Path(c) / "model.safetensors" for c in copies]
    state = load_file(str(weights[1]))
    state["classifier.weight"] = torch.zeros(3, 32)  # a head of 3 labels
    save_file(state, str(weights[1]))
    state = load_file(str(weights[2]))
    state["extra.weight"] = state.pop("bert.pooler.dense.bias")  # a tensor renamed
    save_file(state, str(weights[2]))
    tokenizer = AutoTokenizer.from_pretrained(copies[3])
    tokenizer.add_tokens(["<new-token>"])
    tokenizer.save_pretrained(copies[3])
    config_file = Path(copies[3]) / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "model_type": "roberta"}))
    other_head = Path(copies[1]) / "config.json"  # saved from another head class of the same model type
    other_head.write_text(json.dumps({**json.loads(other_head.read_text()), "architectures": ["BertForMaskedLM"]}))

    config = validate_config(imported_config(tiny_model_dir, [str(tmp_path / "checkpoint-*")]))
    out = tmp_path / "members"
    with pytest.raises(CheckpointError) as error:
        import_members(config, "mrpc", "trainer-run", 0, mrpc_trainer_run / "results/data/mrpc", out)
    message = str(error.value)
    assert (f"{weights[1]}: tensor classifier.weight has shape [3, 32], the run's model [2, 32] (the head of task "
            f"mrpc: 2 labels)") in message
    assert f"{weights[2]}: 1 tensor(s) of the model missing: bert.pooler.dense.bias" in message
    assert f"{weights[2]}: 1 tensor(s) the model does not have: extra.weight" in message
    assert f"{config_file}: model_type 'roberta', the base model's is 'bert'" in message
    assert (f"{other_head}: architectures ['BertForMaskedLM'] differ from {Path(copies[0]) / 'config.json'}'s "
            f"['BertForSequenceClassification']") in message
    assert f"{Path(copies[3]) / 'tokenizer.json'}: tokenizer file differs from {Path(copies[0]) / 'tokenizer.json'}" \
        in message
    assert not out.exists()  # nothing written


def test_checkpoints_of_another_tokenizer_are_refused(tmp_path, tiny_model_dir, mrpc_trainer_run):
    """Members that agree with each other but not with the base model's vocabulary."""
    from transformers import AutoTokenizer

    from bomf.pipeline import import_members

    for step in TRAINER_STEPS:
        copy_dir = shutil.copytree(mrpc_trainer_run / f"trainer/checkpoint-{step}", tmp_path / f"checkpoint-{step}")
        tokenizer = AutoTokenizer.from_pretrained(copy_dir)
        tokenizer.add_tokens(["<new-token>"])
        tokenizer.save_pretrained(copy_dir)
    config = validate_config(imported_config(tiny_model_dir, [str(tmp_path / "checkpoint-*")]))
    with pytest.raises(CheckpointError, match="checkpoint-4: its tokenizer's vocabulary differs from the base model's"):
        import_members(config, "mrpc", "trainer-run", 0, mrpc_trainer_run / "results/data/mrpc", tmp_path / "out")


@pytest.mark.slow
def test_end_to_end_trainer_checkpoints(tmp_path, tiny_model_dir, mrpc_trainer_run):
    """A user's Trainer checkpoints, named in config only, through `snakemake all`: every method that applies,
    tables, figures and an exported model that scores its recorded test metrics."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bomf.tasks.registry import GLUE_TASKS
    from bomf.tasks.sequence import SequenceData

    fusion = ["bomf", "swa", "best_member", "ema", "task_arithmetic"]
    config = imported_config(tiny_model_dir, [str(mrpc_trainer_run / "trainer/checkpoint-*")],
                             fusion={"methods": fusion}, export={"methods": ["bomf"]},
                             baselines={"methods": ["grid_finetune", "hpbo_full", "oracle_subset"]})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(tmp_path, config_file, "all")
    assert result.returncode == 0, result.stderr[-5000:]
    ran = {line.split()[-1].rstrip(":") for line in result.stderr.splitlines() if line.startswith(("rule ", "localrule "))}
    assert "import_members_trainer_run" in ran and not ran & {"hpo_trial", "finetune", "grid_trial", "hpbo_full"}

    applicable = ["bomf", "swa", "best_member", "task_arithmetic", "oracle_subset"]
    run = tmp_path / "results/mrpc/trainer-run/seed0"
    assert list(pd.read_csv(run / "summary.csv")["method"]) == applicable  # no EMA, grid or HPBO-full
    tables = tmp_path / "results/tables"
    for name in TABLES:
        assert (tables / f"{name}.md").stat().st_size > 0, name
    main = pd.read_csv(tables / "table1_main.csv")
    # The majority class of the imported run's task: a reference row beside the methods.
    assert set(main["method"]) == {*applicable, TRIVIAL} and set(main["model"]) == {"trainer-run"}
    assert "import" in set(pd.read_csv(tables / "table5_cost.csv")["stage"])
    for name in FIGURES[:2]:  # landscape, pareto; alignment and correlation need the grid
        assert (tmp_path / "results/figures/mrpc/trainer-run/seed0" / f"{name}.png").stat().st_size > 10_000

    export = tmp_path / "results/export/mrpc/trainer-run/seed0/bomf"
    test = json.loads((run / "test/bomf.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(export)
    spec = GLUE_TASKS["mrpc"]
    data = SequenceData(read_jsonl(tmp_path / "results/data/mrpc/test.jsonl"), AutoTokenizer.from_pretrained(export),
                        64, spec)
    scores, _ = data.evaluate(model, list(spec.metrics), 32, torch.device("cpu"))
    assert scores == pytest.approx(test["test"], abs=1e-6)
    card = (export / "README.md").read_text()
    assert "checkpoint-4" in card and "checkpoint-16" in card and f"f1 {test['test']['f1']:.4f}" in card


def test_peft_adapters_become_members_and_ship(tmp_path, tiny_llama_dir):
    """LoRA adapters saved by Trainer from a PeftModel: imported, fused (SWA), scored on test and exported; the
    exported adapter loads with PeftModel.from_pretrained and scores the recorded test metrics."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bomf import pipeline
    from bomf.tasks.generation import GenerationData
    from bomf.tasks.registry import get_task

    config = tiny_config(tiny_llama_dir, TINY_GENERATION_CONFIG, tasks=["e2e"])
    data = prepared_data(tmp_path, config, "e2e")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    task = get_task("e2e", {})
    # 32 loss sequences, batched (padded, prompt tokens masked) as the pipeline batches them.
    train = GenerationData(read_jsonl(data / "train.jsonl"), tokenizer, task.prompt, 96, 8, True)
    lora = config["model_catalog"]["tiny"]["lora"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=0.0,
                                      target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    trainer_checkpoints(tmp_path / "trainer", model, tokenizer, list(range(32)),
                        lambda indices: train.batch(indices, torch.device("cpu")), 2)
    config = imported_config(tiny_llama_dir, [str(tmp_path / "trainer/checkpoint-*")], TINY_GENERATION_CONFIG,
                             task="e2e", figures={"landscape": {"enabled": False}})
    config = validate_config(config)
    run = tmp_path / "results/e2e/trainer-run/seed0"
    pipeline.import_members(config, "e2e", "trainer-run", 0, data, run / "members")
    manifest = json.loads((run / "members/members.json").read_text())
    assert manifest["steps"] == [2, 4, 6, 8]
    # Each member is its checkpoint's adapter, tensor for tensor (PEFT saves them without the adapter's name).
    adapters = [load_file(str(tmp_path / f"trainer/checkpoint-{step}/adapter_model.safetensors"))
                for step in manifest["steps"]]
    for name, adapter in zip(manifest["members"], adapters):
        member = {key.replace(".default.", "."): t for key, t in load_file(str(run / "members" / name)).items()}
        assert member.keys() == adapter.keys() and all(torch.equal(member[k], adapter[k]) for k in member)
    # θ₀: LoRA's B starts at zero; its A, drawn at random by the fine-tune, is unknown here: the members' mean.
    base = load_file(str(run / "members/base.safetensors"))
    for key, tensor in base.items():
        saved = key.replace(".default.", ".")
        expected = (torch.zeros_like(tensor) if ".lora_B." in key
                    else torch.stack([adapter[saved] for adapter in adapters]).mean(0))
        torch.testing.assert_close(tensor, expected, msg=key)
    pipeline.fuse(config, "e2e", "trainer-run", 0, data, run / "members", "swa", run / "fusion/swa",
                  run / "fusion/swa.journal.jsonl")
    pipeline.evaluate_test(config, "e2e", "trainer-run", 0, "swa", data, run / "members", run / "fusion/swa",
                           run / "test/swa.json")
    export = tmp_path / "export"
    pipeline.export_model(config, "e2e", "trainer-run", 0, "swa", run / "members", run / "fusion/swa",
                          run / "test/swa.json", tmp_path / "commands.log", export)
    test = json.loads((run / "test/swa.json").read_text())
    fused = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), export / "adapter")
    split = GenerationData(read_jsonl(data / "test.jsonl"), tokenizer, task.prompt, 96, 8, False)
    scores, predictions = split.evaluate(fused, list(task.metrics), 32, torch.device("cpu"))
    assert scores == pytest.approx(test["test"], abs=1e-5) and list(predictions) == test["predictions"]

    # Adapters of another rank than the base's lora section: named by file and field before anything is written.
    adapter_config = tmp_path / "trainer/checkpoint-4/adapter_config.json"
    adapter_config.write_text(json.dumps({**json.loads(adapter_config.read_text()), "r": 4}))
    with pytest.raises(CheckpointError, match=f"{adapter_config}: r 4, but model_catalog.tiny.lora.rank is 8"):
        pipeline.import_members(config, "e2e", "trainer-run", 0, data, tmp_path / "other")
    assert not (tmp_path / "other").exists()
