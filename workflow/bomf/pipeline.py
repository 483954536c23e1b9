"""One function per pipeline job. Each reads files and writes files, so it runs the same under Snakemake
(through the thin scripts in workflow/scripts), under pytest, or by hand."""

import platform
from pathlib import Path

import pandas as pd
import torch

from . import hpo, members
from .data import prepare_task_data
from .fusion import METHODS, FusionContext, FusionObjective, MemberStack
from .io import read_json, read_jsonl, write_csv, write_json, write_text
from .models import load_classifier, load_tokenizer, pick_device
from .runtime import seed_everything
from .tables import results_table, run_summary
from .tasks import get_task
from .training import Encoded, evaluate, hyperparameters


def _task(config: dict, task: str):
    return get_task(task, config["custom_tasks"])


def _model_spec(config: dict, model: str) -> dict:
    return config["model_catalog"][model]


def load_splits(data_dir, names, tokenizer, max_length: int, task) -> dict[str, Encoded]:
    return {name: Encoded(read_jsonl(Path(data_dir) / f"{name}.jsonl"), tokenizer, max_length, task)
            for name in names}


def environment() -> dict:
    """What ran a job: recorded next to results so numbers can be traced to hardware and versions."""
    import botorch
    import transformers

    device = pick_device()
    return {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "botorch": botorch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads()}


def prepare_data(config: dict, task: str, out_dir) -> None:
    summary = prepare_task_data(_task(config, task), config["data"], config["custom_tasks"], out_dir)
    print(f"{task}: split sizes {summary['sizes']} ({summary['source']})")


def hpo_suggest(config: dict, task: str, seed: int, round_index: int, trial_files: list, out) -> None:
    trials = [read_json(path) for path in trial_files]
    section = config["hpo"]
    points = hpo.suggest(section["space"], trials, section["trials_per_round"], round_index, seed,
                         section["acquisition"])
    write_json(out, {"round": round_index, "based_on": len(trials), "points": points})
    print(f"round {round_index}: {points}")


def hpo_trial(config: dict, task: str, model: str, seed: int, data_dir, suggest_file, trial_index: int, out) -> None:
    spec, model_spec = _task(config, task), _model_spec(config, model)
    params = read_json(suggest_file)["points"][trial_index]
    data = load_splits(data_dir, ("train", "val"), load_tokenizer(model_spec["source"]), model_spec["max_length"], spec)
    record = hpo.run_trial(model_spec["source"], spec, data, params, config["optim"],
                           model_spec["proxy_frozen_layers"], config["hpo"]["epochs"], seed, pick_device())
    write_json(out, {**record, "environment": environment()})
    print(f"trial {params}: score {record['score']:.4f} in {record['seconds']:.1f}s")


def hpo_select(trial_files: list, out_csv, out_best) -> None:
    trials = [read_json(path) for path in trial_files]
    rows = [{"trial": Path(path).parent.name + "/" + Path(path).stem, **t["params"], "score": t["score"],
             "metric": t["metric"], "seconds": t["seconds"]} for path, t in zip(trial_files, trials)]
    write_csv(out_csv, pd.DataFrame(rows))
    best = hpo.best_trial(trials)
    write_json(out_best, {"params": best["params"], "score": best["score"], "metric": best["metric"],
                          "trials": len(trials)})
    print(f"best of {len(trials)} trials: {best['params']} score {best['score']:.4f}")


def finetune(config: dict, task: str, model: str, seed: int, data_dir, best_file, out_dir) -> None:
    spec, model_spec = _task(config, task), _model_spec(config, model)
    hp = hyperparameters(config["optim"], read_json(best_file)["params"])
    data = load_splits(data_dir, ("train", "val"), load_tokenizer(model_spec["source"]), model_spec["max_length"], spec)
    trajectory = members.run_finetune(model_spec["source"], spec, data, hp, config["optim"], config["finetune"],
                                      seed, pick_device(), out_dir)
    write_json(Path(out_dir) / "environment.json", environment())
    print(trajectory.to_string(index=False))


def fuse(config: dict, task: str, model: str, seed: int, data_dir, members_dir, method: str, out_dir) -> None:
    """Choose fusion weights with ``method`` on the validation split and save the fused model."""
    spec, model_spec = _task(config, task), _model_spec(config, model)
    device = pick_device()
    tokenizer = load_tokenizer(model_spec["source"])
    val = load_splits(data_dir, ("val",), tokenizer, model_spec["max_length"], spec)["val"]
    stack = MemberStack(members.load_members(members_dir), device)  # verifies every checksum first
    seed_everything(seed)
    objective = FusionObjective(stack, load_classifier(model_spec["source"], spec), val, spec,
                                config["optim"]["eval_batch_size"], device)
    result = METHODS[method](FusionContext(objective, config["fusion"], seed))
    scores = objective(result.weights)
    out_dir = Path(out_dir)
    for name, frame in result.tables.items():
        write_csv(out_dir / f"{name}.csv", frame)
    write_json(out_dir / "weights.json", {"method": method, "weights": result.weights.tolist(),
                                          "validation": scores, "environment": environment()})
    objective.model.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    print(f"{method}: validation {scores}")


def evaluate_test(config: dict, task: str, model: str, seed: int, method: str, data_dir, fusion_dir, out) -> None:
    """The only place the test split is read: one evaluation of one chosen model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec, model_spec = _task(config, task), _model_spec(config, model)
    device = pick_device()
    model_dir = Path(fusion_dir) / "model"
    test = load_splits(data_dir, ("test",), AutoTokenizer.from_pretrained(model_dir), model_spec["max_length"],
                       spec)["test"]
    fused = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device)
    scores, predictions = evaluate(fused, test, spec, list(spec.metrics), config["optim"]["eval_batch_size"], device)
    validation = read_json(Path(fusion_dir) / "weights.json")["validation"]
    write_json(out, {"task": task, "model": model, "seed": seed, "method": method,
                     "primary_metric": spec.primary_metric, "test": scores, "validation": validation,
                     "test_size": len(test), "predictions": predictions.tolist(),
                     "labels": test.labels.tolist()})
    print(f"{method}: test {scores}")


def table(config: dict, test_files: list, out_csv, out_md) -> None:
    frame, markdown = results_table([read_json(path) for path in test_files], config["fusion"]["methods"])
    write_csv(out_csv, frame)
    write_text(out_md, markdown)
    print(markdown)



def summarise_run(test_files: list, out_csv) -> None:
    """Validation and test scores of every method of one (task, model, seed) run, side by side."""
    frame = run_summary([read_json(path) for path in test_files])
    write_csv(out_csv, frame)
    print(frame.to_string(index=False))
