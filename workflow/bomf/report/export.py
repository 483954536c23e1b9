"""The model card (README.md) of an exported model: where it came from and how good it is, from the records
the pipeline wrote (members.json, the method's weights.json and history, its test record, commands.log)."""

from pathlib import Path

import pandas as pd

from ..records import EvaluatedModel, MemberManifest, SelectedModel

BO_METHODS = ("bomf", "bo_metric", "bo_loss")


def last_command(commands_log: str | Path) -> dict:
    """The newest entry of <output_dir>/commands.log: the command whose jobs are running now."""
    path = Path(commands_log)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    if not lines:
        return {"time": "unknown", "commit": "unknown", "command": "unknown (no commands.log)"}
    time, commit, command = lines[-1].split("\t", 2)
    return {"time": time, "commit": commit, "command": command}


def _scores(scores: dict) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in scores.items())


def _settings(values: dict) -> str:
    return ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in values.items())


def _how_chosen(selected: SelectedModel, fusion_dir: Path, members: list[str], selection: str,
                imported: bool) -> list[str]:
    if selected.merge is not None:
        merge = dict(selected.merge)
        method = merge.pop("method")
        grid = pd.read_csv(fusion_dir / "history.csv")
        base = ("the base model, with the members' mean where the fine-tune's initialisation is unknown" if imported
                else "the model stage 2 started from")
        return [f"Task-vector merge `{method}` of the members (θ₀ + λ·τ, θ₀ {base}), "
                f"its hyperparameters chosen on validation from a grid of {len(grid)}: "
                + ", ".join(f"{name} = {value}" for name, value in merge.items()) + "."]
    if selected.weights is not None:
        lines = ["Fusion weights θ = Σ wᵢθᵢ over the members:", "", "| member | weight |", "|---|---:|"]
        lines += [f"| {name} | {weight:.6f} |" for name, weight in zip(members, selected.weights)]
        history = fusion_dir / "history.csv"
        if selected.method in BO_METHODS and history.is_file():
            frame = pd.read_csv(history)
            chosen = frame[frame["chosen"]].iloc[0]
            front = int(frame["pareto"].sum())
            lines += ["", f"Chosen by the rule `{selection}` among the {front} Pareto-optimal points of "
                          f"{len(frame)} fused models evaluated on validation (objectives: validation loss and "
                          f"every task metric); on the front: {bool(chosen['pareto'])}."]
        return lines
    if selected.span is not None:
        lines = ["Coefficients θ = Σ αᵢθᵢ in the members' linear span (any sign, any sum), trained on the "
                 "training loss (TWA):", "", "| member | coefficient |", "|---|---:|"]
        return lines + [f"| {name} | {alpha:.6f} |" for name, alpha in zip(members, selected.span)]
    if selected.stored is not None:
        return [f"The `{selected.stored}` state stage 2 kept beside its members: the exponential moving average "
                "of its weights from the first member on (finetune.ema_decay)."]
    if selected.aligned is not None:
        return [f"OTFusion: every member's neurons aligned by optimal transport to member "
                f"`{members[selected.aligned['reference']]}` (attention heads as units), then averaged."]
    return [f"A single checkpoint (step {selected.step}) of its own fine-tune ({_settings(selected.params)})."]


def model_card(task: str, model: str, seed: int, source: str, model_class: str, members_dir, fusion_dir,
               test_file, selection: str, command: dict, adapter: bool) -> str:
    """The README.md of an exported model, in Markdown with the Hugging Face metadata header."""
    members_dir, fusion_dir = Path(members_dir), Path(fusion_dir)
    manifest = MemberManifest.read(members_dir)
    selected = SelectedModel.read(fusion_dir)
    test = EvaluatedModel.read(test_file)
    names = list(manifest.members)
    if manifest.imported:
        origin = [f"- Members: {len(names)} checkpoints of the user's own fine-tune, imported (checked against the "
                  f"base and the task) at steps {', '.join(map(str, manifest.steps))}",
                  *(f"  - `{name}` from `{directory}`, sha256 `{checksum}`"
                    for (name, checksum), directory in zip(manifest.members.items(), manifest.imported))]
    else:
        origin = [f"- Members: {len(names)} checkpoints of one fine-tune (seed {manifest.seed}; "
                  f"{_settings(manifest.hyperparameters)}) at steps {', '.join(map(str, manifest.steps))}",
                  *(f"  - `{name}` sha256 `{checksum}`" for name, checksum in manifest.members.items())]
    load = (f"from transformers import {model_class}\n"
            f"model = {model_class}.from_pretrained(\"<this directory>\")")
    if adapter:
        load += ("\n# or the fused LoRA adapter on its base model:\n"
                 "from peft import PeftModel\n"
                 f"model = PeftModel.from_pretrained(<the base model {source}>, \"<this directory>/adapter\")")
    lines = [
        "---", "library_name: transformers", "tags: [bomf, model-fusion]", "---", "",
        f"# {task} · {model} · seed {seed} · {selected.method}", "",
        "Fused by bomf (BOMF: model fusion through Bayesian optimisation, Jang et al., NeurIPS 2024) from the "
        "checkpoints of one fine-tuning run.", "",
        "## Source", "",
        f"- Base model: `{source}`",
        *origin, "",
        "## How it was chosen", "", *_how_chosen(selected, fusion_dir, names, selection, bool(manifest.imported)), "",
        "## Scores", "",
        f"- Validation: {_scores(selected.validation)}",
        f"- Test ({test.test_size} examples): {_scores(test.test)}",
        "",
        "**Oracle**: chosen on the test split itself; an upper bound, not a method." if selected.oracle else
        "Chosen on validation alone: the test split was read only to score it.",
        "",
        "## Reproduce", "",
        f"Made by `{command['command']}` (started {command['time']}, commit {command['commit']}).", "",
        "## Load", "", "```python", load, "```", "",
    ]
    return "\n".join(lines)
