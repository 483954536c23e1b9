"""The noise-aware Pareto rule (loss_within_se), the old rules' choices on the committed searches, and the
selection-rule study: its job on the tiny model, its table and its place in the workflow."""

import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, tiny_config, write_tiny_config

from bomf import pipeline
from bomf.config import ConfigError, validate_config
from bomf.fuse.mobo import history_front
from bomf.fuse.selection import SELECTION_RULES, bootstrap_standard_error, standard_error_point
from bomf.layout import SELECTION_STUDY_FILE
from bomf.records import EvaluatedModel, HpoChoice
from bomf.report.tables import TABLES, USED_MARK, selection_rules_table
from bomf.tasks.registry import get_task

# A hand-made Pareto set: loss rises as accuracy rises.
FRONT = pd.DataFrame({"loss": [0.20, 0.30, 0.60, 0.90], "accuracy": [0.60, 0.75, 0.80, 0.81]}, index=[3, 7, 9, 12])
FRONT_YN = np.array([[1.0, 0.0], [0.8, 0.7], [0.3, 0.95], [0.0, 1.0]])
RULE = SELECTION_RULES["loss_within_se"]


@pytest.mark.parametrize("standard_error, expected", [
    (0.0, 12),  # nothing within: the best metric itself
    (0.005, 12),  # 0.80 is 0.01 below the best
    (0.02, 9),  # 0.80 within, and its loss 0.60 is lower than 0.90
    (0.07, 7),  # 0.75 within (0.06 below): loss 0.30
    (0.25, 3),  # every point within: the lowest loss
    (math.nan, 12),  # no usable standard error: the best metric
])
def test_loss_within_se_on_a_hand_made_front(standard_error, expected):
    assert standard_error_point(FRONT, FRONT_YN, "accuracy") == 12
    assert RULE(FRONT, FRONT_YN, "accuracy", standard_error) == expected


def test_loss_within_se_reads_a_lower_is_better_metric_in_its_direction():
    errors = FRONT.assign(error_rate=1 - FRONT["accuracy"]).drop(columns="accuracy")  # 0.40, 0.25, 0.20, 0.19
    assert RULE(errors, FRONT_YN, "error_rate", 0.02) == 9
    assert RULE(errors, FRONT_YN, "error_rate", 0.07) == 7


def test_loss_within_se_breaks_loss_ties_by_the_better_metric():
    frame = pd.DataFrame({"loss": [0.5, 0.4, 0.4], "f1": [0.80, 0.78, 0.79]}, index=[10, 11, 12])
    assert RULE(frame, np.zeros((3, 2)), "f1", 0.05) == 12


def test_a_rule_that_needs_the_standard_error_is_refused_without_it():
    with pytest.raises(ValueError, match="needs the validation standard error"):
        RULE(FRONT, FRONT_YN, "accuracy")
    # The old rules take no standard error, and one given changes nothing.
    for name in ("best_metric", "best_loss", "knee"):
        assert not SELECTION_RULES[name].needs_standard_error
        assert SELECTION_RULES[name](FRONT, FRONT_YN, "accuracy", 0.5) == SELECTION_RULES[name](FRONT, FRONT_YN,
                                                                                                 "accuracy")


def test_bootstrap_standard_error_of_a_proportion_is_the_binomial_one():
    labels = np.zeros(400, dtype=int)
    predictions = np.r_[np.zeros(300, dtype=int), np.ones(100, dtype=int)]  # accuracy 0.75
    se = bootstrap_standard_error(predictions, labels, "accuracy")
    assert se == pytest.approx(math.sqrt(0.75 * 0.25 / 400), rel=0.06)
    assert se == bootstrap_standard_error(predictions, labels, "accuracy")  # seeded: the same every time
    # A constant prediction has MCC 0 on every resample: no spread.
    assert bootstrap_standard_error(np.zeros(400, dtype=int), np.r_[np.zeros(200), np.ones(200)], "mcc") == 0.0


# The searches committed under results/cpu/ were chosen by best_metric (configs/cpu_glue.yaml): the registered
# rule, given the front as each search saw it, picks the committed row, bit for bit.
COMMITTED = sorted((REPO / "results" / "cpu").glob("*/*/*/seed*/fusion/*/history.csv"))


@pytest.mark.skipif(not COMMITTED, reason="no committed searches")
def test_the_old_rules_pick_what_the_committed_searches_chose():
    checked = 0
    for path in COMMITTED:
        search = path.parent.name
        if search not in ("bomf", "bo_metric", "bo_loss"):
            continue
        spec = get_task(path.parents[4].name, {})
        searched = {"bomf": ["loss", *spec.metrics], "bo_metric": [spec.primary_metric], "bo_loss": ["loss"]}[search]
        history = pd.read_csv(path, float_precision="round_trip")
        front, front_yn = history_front(history, searched)
        chosen = SELECTION_RULES["best_metric"](front, front_yn, spec.primary_metric)
        assert [chosen] == history.index[history["chosen"]].tolist(), path
        checked += 1
    assert checked >= 12


# --------------------------------------------------------------------------------------- the study job

@pytest.fixture(scope="module")
def study(tiny_model_dir, tmp_path_factory) -> dict:
    """One tiny RTE run: members, BOMF's search under best_metric and under loss_within_se, BOMF's test record,
    and the study of each search."""
    workdir = tmp_path_factory.mktemp("study")
    config = validate_config(tiny_config(tiny_model_dir, tasks=["rte"], tables={"selection_study": [0]}))
    data, run = workdir / "data", workdir / "run"
    job = {"task": "rte", "model": "tiny", "seed": 0}
    pipeline.prepare_data(config, "rte", data)
    HpoChoice({"learning_rate": 1e-3, "batch_size": 16}, score=math.nan, loss=math.nan, metric="accuracy", trials=0,
              warning="").write(run / "hpo/best.json")
    pipeline.finetune(config, **job, data_dir=data, best_file=run / "hpo/best.json", out_dir=run / "members",
                      staging_dir=run / "members.resume", checkpoint_seconds=1800)
    searches = {}
    for rule in ("best_metric", "loss_within_se"):
        settings = with_rule(config, rule)
        pipeline.fuse(settings, **job, data_dir=data, members_dir=run / "members", method="bomf",
                      out_dir=run / f"fusion/{rule}", journal=run / f"fusion/{rule}.journal.jsonl")
        pipeline.selection_study(settings, **job, data_dir=data, members_dir=run / "members",
                                 fusion_dir=run / f"fusion/{rule}", out=run / f"{rule}.csv")
        searches[rule] = (pd.read_csv(run / f"fusion/{rule}/history.csv"), pd.read_csv(run / f"{rule}.csv"))
    pipeline.evaluate_test(config, **job, method="bomf", data_dir=data, members_dir=run / "members",
                           fusion_dir=run / "fusion/best_metric", out=run / "test/bomf.json")
    return {"searches": searches, "record": EvaluatedModel.read(run / "test/bomf.json"), "config": config,
            "data": data, "run": run, "job": job}


def with_rule(config: dict, rule: str) -> dict:
    return {**config, "fusion": {**config["fusion"], "selection": rule}}


def test_the_study_scores_every_rule_on_the_same_search(study):
    history, rules = study["searches"]["best_metric"]
    assert rules["rule"].tolist() == list(SELECTION_RULES)
    assert rules.loc[rules["used"], "rule"].tolist() == ["best_metric"]
    assert set(rules["evaluation"]) <= set(history.index[history["pareto"]])
    for _, row in rules.iterrows():  # validation objectives as the search recorded them
        for name in ("loss", "accuracy"):
            assert row[f"val_{name}"] == history.loc[row["evaluation"], name]
    # The rule BOMF used picks BOMF's point, and its test scores are evaluate_test's, bit for bit.
    used = rules[rules["used"]].iloc[0]
    assert used["evaluation"] == history.index[history["chosen"]][0]
    assert {m: used[f"test_{m}"] for m in study["record"].test} == study["record"].test
    # One standard error for every rule: the best-metric point's, a bootstrap near the binomial one.
    assert rules["standard_error"].nunique() == 1
    assert (rules["standard_error_evaluation"] == used["evaluation"]).all()
    p, size = used["val_accuracy"], len(pd.read_json(study["data"] / "val.jsonl", lines=True))
    assert rules["standard_error"].iloc[0] == pytest.approx(math.sqrt(p * (1 - p) / size), rel=0.15)
    # The same point scores the same whichever rule picked it.
    for _, picks in rules.groupby("evaluation"):
        assert len(picks.filter(like="test_").drop_duplicates()) == 1


def test_a_search_under_loss_within_se_chooses_as_the_study_says(study):
    (first, first_rules), (history, rules) = study["searches"]["best_metric"], study["searches"]["loss_within_se"]
    # The rule only chooses: the two searches evaluated the same points, and the studies agree but for the mark.
    pd.testing.assert_frame_equal(history.drop(columns=["chosen", "bo_seconds", "eval_seconds"]),
                                  first.drop(columns=["chosen", "bo_seconds", "eval_seconds"]))
    pd.testing.assert_frame_equal(rules.drop(columns="used"), first_rules.drop(columns="used"))
    used = rules[rules["used"]].iloc[0]
    assert used["rule"] == "loss_within_se"
    assert used["evaluation"] == history.index[history["chosen"]][0]


def test_the_study_refuses_a_search_chosen_under_another_rule(study):
    """A history whose chosen row is not what fusion.selection picks (written under another rule or code)."""
    run = study["run"]
    shutil.copytree(run / "fusion/best_metric", run / "fusion/tampered")
    history = pd.read_csv(run / "fusion/tampered/history.csv", float_precision="round_trip")
    chosen = history.index[history["chosen"]][0]
    history["chosen"] = history.index == (chosen + 1) % len(history)
    history.to_csv(run / "fusion/tampered/history.csv", index=False)
    with pytest.raises(ValueError, match=f"its chosen evaluation {(chosen + 1) % len(history)} is not what "
                                         f"fusion.selection 'best_metric' picks \\({chosen}\\)"):
        pipeline.selection_study(study["config"], **study["job"], data_dir=study["data"],
                                 members_dir=run / "members", fusion_dir=run / "fusion/tampered",
                                 out=run / "refused.csv")
    assert not (run / "refused.csv").exists()


# ------------------------------------------------------------------------------------------- the table

def _study_rows(task: str, metric: str, seed: int, scores: dict[str, float], used: str = "best_metric") -> list:
    return [{"rule": rule, "used": rule == used, "evaluation": 10 + i, "metric": metric, f"test_{metric}": score,
             "standard_error": 0.02, "task": task, "model": "tiny", "seed": seed}
            for i, (rule, score) in enumerate(scores.items())]


def test_the_rules_table_averages_each_rules_test_score_over_runs():
    studies = pd.DataFrame([
        *_study_rows("rte", "accuracy", 0, {"best_metric": 0.60, "best_loss": 0.62, "knee": 0.61,
                                            "loss_within_se": 0.64}),
        *_study_rows("rte", "accuracy", 1, {"best_metric": 0.70, "best_loss": 0.66, "knee": 0.61,
                                            "loss_within_se": 0.68}),
        *_study_rows("mrpc", "f1", 0, {"best_metric": 0.80, "best_loss": 0.82, "knee": 0.81, "loss_within_se": 0.84}),
        *_study_rows("mrpc", "f1", 1, {"best_metric": 0.90, "best_loss": 0.86, "knee": 0.81, "loss_within_se": 0.88}),
    ])
    table = selection_rules_table(studies)
    cells = table.frame.set_index(["rule", "task"])
    assert cells.loc[("best_metric", "rte"), "mean"] == pytest.approx(65.0)
    assert cells.loc[("best_metric", "rte"), "std"] == pytest.approx(math.sqrt(50.0))  # 60, 70: sample std
    assert cells.loc[("loss_within_se", "mrpc"), "mean"] == pytest.approx(86.0)
    # Avg: per seed over tasks ((64 + 84) / 2 and (68 + 88) / 2), then over seeds.
    assert cells.loc[("loss_within_se", "avg"), "mean"] == pytest.approx(76.0)
    assert cells.loc[("knee", "avg"), "std"] == pytest.approx(0.0)
    assert cells["used"].groupby("rule").first().to_dict() == {"best_loss": False, "best_metric": True,
                                                               "knee": False, "loss_within_se": False}
    assert f"best_metric{USED_MARK}" in table.markdown and f"knee{USED_MARK}" not in table.markdown
    assert "table10_selection_rules" in TABLES
    assert (REPO / "workflow" / "report" / "table10_selection_rules.rst").is_file()


def test_without_studies_the_rules_table_is_empty():
    assert selection_rules_table(pd.DataFrame()).frame.empty


def test_paper_tables_reads_each_runs_study_with_its_run(tmp_path):
    path = tmp_path / "rte" / "tiny" / "seed3" / SELECTION_STUDY_FILE
    path.parent.mkdir(parents=True)
    pd.DataFrame(_study_rows("x", "accuracy", 9, {"best_metric": 0.5})).drop(
        columns=["task", "model", "seed"]).to_csv(path, index=False)
    studies = pipeline._selection_studies([path])
    assert studies[["task", "model", "seed"]].values.tolist() == [["rte", "tiny", 3]]


# ------------------------------------------------------------------------------------- the config and DAG

def test_the_study_config_names_its_field(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"tables.selection_study: no run with BOMF has seed 4"):
        validate_config(tiny_config(tiny_model_dir, tables={"selection_study": [4]}))
    without_bomf = {"methods": ["swa"]}
    with pytest.raises(ConfigError, match=r"tables.selection_study: the study reads BOMF's search"):
        validate_config(tiny_config(tiny_model_dir, fusion=without_bomf, tables={"selection_study": [0]}))
    assert validate_config(tiny_config(tiny_model_dir))["tables"]["selection_study"] == []


def test_the_dag_runs_the_study_only_where_asked(tmp_path, tiny_model_dir):
    config = write_tiny_config(tmp_path / "config.yaml", tiny_model_dir, tables={"selection_study": [0]})
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(tmp_path), "--configfile", str(config), "--cores", "1", "paper_tables", "-n", "--quiet", "rules"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    counts = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts.get("selection_study") == "2", result.stdout  # rte and stsb, seed 0
