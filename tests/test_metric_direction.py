"""A lower-is-better metric end to end: a custom regression task on STS-B pairs whose primary metric is the MAE,
through stage 1's choice, stage 2, ``pipeline.fuse`` (bomf, best_member, greedy_soup), the test evaluation,
the ranking, the paired bootstrap and the tables. Every choice must take the lowest MAE where a
higher-is-better reading would take the highest."""

import csv

import numpy as np
import pandas as pd
import pytest
from conftest import GLUE_DIR, tiny_config

from bomf import pipeline
from bomf.config import validate_config
from bomf.metrics import METRICS, ranking_key
from bomf.records import EvaluatedModel, HpoChoice, HpoTrial, SelectedModel
from bomf.report import tables
from bomf.report.stats import bomf_comparisons

# swa and last_member choose nothing; they give the tables test scores that differ from the choices'.
METHODS = ("bomf", "best_member", "greedy_soup", "swa", "last_member")
OBJECTIVES = ("loss", "mae", "pearson")  # bomf's: loss and MAE minimised, Pearson maximised


def _write_pairs(path, lines) -> None:
    """STS-B rows (its TSV: sentence1, sentence2, score in columns 7-9) as a custom task's CSV."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows(line.rstrip("\n").split("\t")[7:10] for line in lines)


@pytest.fixture(scope="module")
def mae_run(tiny_model_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mae-run")
    lines = (GLUE_DIR / "STS-B" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[1:]
    _write_pairs(workdir / "train.csv", lines[:96])
    _write_pairs(workdir / "test.csv", lines[96:144])
    task = {"train": str(workdir / "train.csv"), "test": str(workdir / "test.csv"),
            "text_columns": ["sentence1", "sentence2"], "label_column": "score", "kind": "regression",
            "metrics": ["mae", "pearson"]}
    config = validate_config(tiny_config(tiny_model_dir, tasks=["scores"], custom_tasks={"scores": task},
                                         hpo={"rounds": 1, "trials_per_round": 3},
                                         fusion={"evaluations": 6, "initial_points": 2}))
    run, data = workdir / "run", workdir / "data"
    job = {"config": config, "task": "scores", "model": "tiny", "seed": 0}
    pipeline.prepare_data(config, "scores", data)
    pipeline.hpo_suggest(config, "scores", 0, 0, [], run / "hpo/round0/suggest.json")
    trial_files = [run / f"hpo/round0/trial{i}.json" for i in range(3)]
    for index, path in enumerate(trial_files):
        pipeline.hpo_trial(**job, data_dir=data, suggest_file=run / "hpo/round0/suggest.json", trial_index=index,
                           out=path, staging_dir=run / f"hpo/round0/trial{index}.resume", checkpoint_seconds=1800)
    pipeline.hpo_select(trial_files, run / "hpo/trials.csv", run / "hpo/best.json")
    pipeline.finetune(**job, data_dir=data, best_file=run / "hpo/best.json", out_dir=run / "members",
                      staging_dir=run / "members.resume", checkpoint_seconds=1800)
    for method in METHODS:
        pipeline.fuse(**job, data_dir=data, members_dir=run / "members", method=method,
                      out_dir=run / f"fusion/{method}", journal=run / f"fusion/{method}.journal.jsonl")
        pipeline.evaluate_test(**job, method=method, data_dir=data, members_dir=run / "members",
                               fusion_dir=run / f"fusion/{method}", out=run / f"test/{method}.json")
    return run, trial_files


def test_stage_one_keeps_the_trial_with_the_lowest_mae(mae_run):
    run, trial_files = mae_run
    trials = [HpoTrial.read(path) for path in trial_files]
    for trial in trials:  # a trial's score is its lowest validation MAE over its evaluations
        assert trial.metric == "mae" and trial.score == min(row["val_mae"] for row in trial.trajectory)
    assert len({t.score for t in trials}) > 1  # the choice is not a tie
    assert HpoChoice.read(run / "hpo/best.json").score == min(t.score for t in trials)


def _members(run) -> pd.DataFrame:
    history = pd.read_csv(run / "fusion/bomf/history.csv")
    return history[history["source"] == "member"].reset_index(drop=True)


def test_best_member_is_the_lowest_validation_mae(mae_run):
    run, _ = mae_run
    members = _members(run)
    assert members["mae"].nunique() > 1
    weights = SelectedModel.read(run / "fusion/best_member").weights
    assert int(np.argmax(weights)) == int(members["mae"].idxmin())


def test_greedy_soup_starts_from_the_lowest_mae_and_accepts_only_what_does_not_raise_it(mae_run):
    run, _ = mae_run
    members = _members(run)
    tried = pd.read_csv(run / "fusion/greedy_soup/history.csv")
    best = members["mae"].min()
    assert int(members["mae"].idxmin()) not in set(tried["member"])  # the soup's first ingredient
    for row in tried.itertuples():
        assert row.accepted == (row.mae <= best)
        best = min(best, row.mae) if row.accepted else best
    weights = np.asarray(SelectedModel.read(run / "fusion/greedy_soup").weights)
    assert weights[members["mae"].idxmin()] > 0


def test_bomf_minimises_the_mae_on_its_pareto_front_and_chooses_the_lowest(mae_run):
    run, _ = mae_run
    history = pd.read_csv(run / "fusion/bomf/history.csv")
    maximised = history[list(OBJECTIVES)].to_numpy() * np.array([-1.0, -1.0, 1.0])
    dominated = [bool(((maximised >= row).all(1) & (maximised > row).any(1)).any()) for row in maximised]
    assert history["pareto"].tolist() == [not d for d in dominated]
    front = history[history["pareto"]]
    chosen = history[history["chosen"]].iloc[0]
    assert chosen["pareto"] and chosen["mae"] == front["mae"].min()
    lowest = front[front["mae"] == front["mae"].min()]
    assert chosen["loss"] == lowest["loss"].min()  # ties: the lower loss
    selected = SelectedModel.read(run / "fusion/bomf")
    assert selected.validation["mae"] == pytest.approx(chosen["mae"], rel=1e-6)


def test_the_tables_bold_the_lowest_mae_and_the_highest_pearson(mae_run):
    run, _ = mae_run
    records = [EvaluatedModel.read(run / f"test/{method}.json") for method in METHODS]
    mae = {r.method: r.test["mae"] for r in records}
    assert len(set(mae.values())) > 1
    main, _ = tables.main_table(records, METHODS, resamples=50)
    cells = main.frame[main.frame["task"] == "scores"].set_index("method")
    lowest = round(min(mae.values()), 3)  # marks compare the values as shown: an MAE with 3 decimals
    assert {m for m, v in mae.items() if round(v, 3) == lowest} == set(cells.index[cells["mark"] == "best"])
    assert cells.loc[max(mae, key=mae.get), "mark"] != "best"
    assert cells["mean"].to_dict() == pytest.approx(mae)  # an MAE is shown as it is, not x100
    every = tables.all_metrics_table(records, list(METHODS)).frame.set_index(["metric", "method"])
    pearson = {r.method: r.test["pearson"] for r in records}
    assert every.loc[("mae", min(mae, key=mae.get)), "mark"] == "best"
    assert every.loc[("mae", max(mae, key=mae.get)), "mark"] != "best"
    assert every.loc[("pearson", max(pearson, key=pearson.get)), "mark"] == "best"


def _record(method: str, seed: int, predictions: list[float], labels: list[float]) -> EvaluatedModel:
    test = {"loss": 1.0, **{m: METRICS[m](np.array(predictions), np.array(labels)) for m in ("mae", "pearson")}}
    return EvaluatedModel("scores", "m", seed, method, "mae", test=test, validation={"loss": 1.0, **test},
                          test_size=len(labels), predictions=predictions, labels=labels)


def test_ranking_bootstrap_and_marks_read_the_direction_of_a_lower_is_better_metric():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, size=60)
    noise = {"bomf": 0.3, "swa": 1.0, "best_member": 2.0}  # bomf closest to the labels: the lowest MAE
    records = [_record(method, seed, (labels + rng.normal(0, scale, 60)).tolist(), labels.tolist())
               for method, scale in noise.items() for seed in (0, 1)]
    assert max(noise, key=lambda m: ranking_key(next(r.test for r in records if r.method == m), "mae")) == "bomf"
    comparisons = bomf_comparisons(records, ["swa", "best_member"], resamples=200).set_index("comparison")
    # The best baseline is the lower-MAE one, and BOMF's lower MAE is a negative difference.
    assert comparisons.loc["best baseline", "baseline"] == "swa"
    assert comparisons.loc["swa", "ci_high"] < 0
    frame = tables.main_table(records, list(noise), resamples=50)[0].frame
    marks = frame[frame["task"] == "scores"].set_index("method")["mark"].to_dict()
    assert marks == {"bomf": "best", "swa": "second", "best_member": ""}
    # A mean over tasks of an MAE and an accuracy means nothing: no Avg then.
    accuracy = [EvaluatedModel("rte", "m", seed, method, "accuracy", test={"loss": 1.0, "accuracy": 0.5},
                               validation={"loss": 1.0, "accuracy": 0.5}, test_size=2, predictions=[0, 1],
                               labels=[0, 0]) for method in noise for seed in (0, 1)]
    mixed = tables.main_table(records + accuracy, list(noise), resamples=50)[0].frame
    assert "avg" not in set(mixed["task"])
