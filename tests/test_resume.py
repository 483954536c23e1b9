"""Interruption and resume, and determinism.

Unit level: a fine-tune resumed from a state written mid-run, and a fusion search resumed from its journal,
end bit-identical to uninterrupted ones; invalid states and stale journals are ignored. End to end: real
Snakemake runs of the tiny config whose jobs are killed with SIGKILL in stage 1, the fine-tune and the BO
fusion search, rerun until they complete, give exactly the results of an uninterrupted run; and two
uninterrupted runs in separate directories give the same results.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch

import bomf.fuse.mobo
import bomf.train.members
import bomf.train.resume
import bomf.train.training
from bomf.fuse.journal import JournaledObjective
from bomf.fuse.mobo import run_mobo
from bomf.io import read_json
from bomf.settings import Hyperparameters
from bomf.tasks.models import load_tokenizer
from bomf.tasks.readers import read_glue_tsv
from bomf.tasks.registry import GLUE_TASKS
from bomf.tasks.sequence import SequenceData
from bomf.fuse.baselines import train_keeping_best
from bomf.train.hpo import run_trial
from bomf.train.members import member_path, run_finetune
from bomf.train.resume import StaleStateError
from bomf.train.training import TrainingStopped
from conftest import GLUE_DIR, write_tiny_config
from test_pipeline import SNAKEMAKE

RTE = GLUE_TASKS["rte"]
CPU = torch.device("cpu")
HP = Hyperparameters(learning_rate=1e-3, batch_size=8, warmup_ratio=0.1, weight_decay=0.01)
OPTIM = {"schedule": "linear", "adam_eps": 1e-6, "adam_betas": [0.9, 0.98], "max_device_batch": 8,
         "eval_batch_size": 16}
# The optim section of the jobs that take their other hyperparameters from the config (stage-1 trials, the grid).
JOB_OPTIM = {**OPTIM, "weight_decay": 0.01, "warmup_ratio": 0.1}
TIMING_COLUMNS = ["bo_seconds", "eval_seconds"]


class Interrupted(Exception):
    """Stands in for a kill in the unit tests."""


@pytest.fixture(scope="module")
def rte(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train = read_glue_tsv(RTE, GLUE_DIR / "RTE" / "train.tsv")[:32]
    val = read_glue_tsv(RTE, GLUE_DIR / "RTE" / "dev.tsv")[:16]
    return {"train": SequenceData(train, tokenizer, 64, RTE), "val": SequenceData(val, tokenizer, 64, RTE)}


def finetune_config(members: int = 3, start_fraction: float = 0.5) -> dict:
    # The moving average is part of the training state: members.json records its checksum, which a resumed
    # run must reproduce like the members'.
    return {"epochs": 2, "members": members, "start_fraction": start_fraction, "ema_decay": 0.9}


def finetune(source, rte, out_dir: Path, config: dict, hp=HP, checkpoint_seconds=None) -> pd.DataFrame:
    """run_finetune with dropout on (its RNG is part of the state); 32 examples, batch 8: 4 steps an epoch."""
    return run_finetune({"source": str(source)}, RTE, rte, hp, OPTIM, config, 0, CPU, out_dir, out_dir.with_suffix(".resume"),
                        checkpoint_seconds=checkpoint_seconds)


@contextmanager
def killed_after_states(monkeypatch, states: int):
    """A block whose training job is killed right after writing its ``states``-th resumable state."""
    write, written = bomf.train.resume.write_training_state, []

    def write_then_stop(*args):
        write(*args)
        written.append(args)
        if len(written) == states:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(bomf.train.resume, "write_training_state", write_then_stop)
        with pytest.raises(Interrupted):
            yield


def interrupted_finetune(source, rte, out_dir: Path, config: dict, states: int, monkeypatch, hp=HP,
                         checkpoint_seconds=None) -> dict:
    """A fine-tune stopped right after its ``states``-th resumable state; returns that state's JSON."""
    with killed_after_states(monkeypatch, states):
        finetune(source, rte, out_dir, config, hp, checkpoint_seconds)
    assert not (out_dir / "members.json").exists()
    return read_json(out_dir.with_suffix(".resume") / "state.json")


def finetune_results(out_dir: Path) -> tuple[dict, list[dict]]:
    trajectory = pd.read_csv(out_dir / "trajectory.csv").drop(columns="seconds")
    return read_json(out_dir / "members.json"), trajectory.to_dict("records")


@pytest.fixture(scope="module")
def uninterrupted_finetunes(tiny_model_dir, rte, tmp_path_factory):
    """Reference fine-tunes: members in the middle of an epoch (steps 6, 7, 8) and at an epoch's end (4, 8)."""
    runs = {}
    for members, start in [(3, 0.5), (2, 0.0)]:
        out_dir = tmp_path_factory.mktemp("finetune") / "members"
        finetune(tiny_model_dir, rte, out_dir, finetune_config(members, start))
        runs[members, start] = finetune_results(out_dir)
    return runs


@pytest.mark.parametrize("members,start,states,resumed_step",
                         [(3, 0.5, 1, 6), (3, 0.5, 2, 7), (3, 0.5, 3, 8), (2, 0.0, 1, 4)])
def test_resumed_finetune_is_bit_identical(tiny_model_dir, rte, tmp_path, monkeypatch, capsys,
                                           uninterrupted_finetunes, members, start, states, resumed_step):
    config = finetune_config(members, start)
    out_dir = tmp_path / "members"
    state = interrupted_finetune(tiny_model_dir, rte, out_dir, config, states, monkeypatch)
    assert state["step"] == resumed_step and len(state["files"]) == states
    staging = out_dir.with_suffix(".resume")
    assert [p.name for p in staging.glob("state-step*.safetensors")] == [f"state-step{resumed_step:09d}.safetensors"]
    capsys.readouterr()

    finetune(tiny_model_dir, rte, out_dir, config)
    assert f"resumed from step {resumed_step}" in capsys.readouterr().out
    manifest, trajectory = finetune_results(out_dir)
    expected_manifest, expected_trajectory = uninterrupted_finetunes[members, start]
    assert manifest == expected_manifest  # the same member checksums: bit-identical members
    assert trajectory == expected_trajectory
    assert not staging.exists()
    assert all(bomf.train.members.sha256(out_dir / name) == digest for name, digest in manifest["members"].items())


@pytest.mark.parametrize("states,resumed_step,members_done", [(2, 2, 0), (5, 5, 0), (7, 7, 2)])
def test_a_finetune_killed_in_its_first_half_resumes_from_its_last_periodic_state(
        tiny_model_dir, rte, tmp_path, monkeypatch, capsys, uninterrupted_finetunes, states, resumed_step, members_done):
    """States every finetune.checkpoint_minutes (here: after every step), not only at members: a job killed
    before its first member (steps 6, 7, 8) resumes where it was and ends as the uninterrupted run did."""
    config, out_dir = finetune_config(), tmp_path / "members"
    state = interrupted_finetune(tiny_model_dir, rte, out_dir, config, states, monkeypatch, checkpoint_seconds=1e-9)
    assert state["step"] == resumed_step and len(state["files"]) == members_done
    capsys.readouterr()
    finetune(tiny_model_dir, rte, out_dir, config, checkpoint_seconds=1e-9)
    assert f"resumed from step {resumed_step} ({members_done} of 3 members done)" in capsys.readouterr().out
    assert finetune_results(out_dir) == uninterrupted_finetunes[3, 0.5]


def test_a_finetune_signalled_by_slurm_saves_its_state_stops_and_resumes(tiny_model_dir, rte, tmp_path, monkeypatch,
                                                                         capsys, uninterrupted_finetunes):
    """SIGTERM (SLURM's warning before a time limit or a pre-emption) at step 3 of 8: the job writes its state
    there and stops with one line; the rerun resumes there and ends as the uninterrupted run did."""
    accumulate, calls = bomf.train.training._accumulate_gradients, []

    def signalled(*args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return accumulate(*args)

    out_dir = tmp_path / "members"
    with monkeypatch.context() as patch:
        patch.setattr(bomf.train.training, "_accumulate_gradients", signalled)
        with pytest.raises(TrainingStopped, match="stopped on request at step 3 of 8, its state saved"):
            finetune(tiny_model_dir, rte, out_dir, finetune_config())
    assert read_json(out_dir.with_suffix(".resume") / "state.json")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the job's only while it trains
    capsys.readouterr()
    finetune(tiny_model_dir, rte, out_dir, finetune_config())
    assert "resumed from step 3 (0 of 3 members done)" in capsys.readouterr().out
    assert finetune_results(out_dir) == uninterrupted_finetunes[3, 0.5]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,reason", [
    ("member", "does not match its recorded checksum"),
    ("tensors", "does not match its recorded checksum"),
    ("truncated json", ""),
    ("hyperparameters", "written for another run (different hyperparameters)"),
])
def test_invalid_state_is_ignored(tiny_model_dir, rte, tmp_path, monkeypatch, capsys, uninterrupted_finetunes,
                                  damage, reason):
    config = finetune_config()
    out_dir = tmp_path / "members"
    staging = out_dir.with_suffix(".resume")
    other_hp = Hyperparameters(learning_rate=5e-4, batch_size=8, warmup_ratio=0.1, weight_decay=0.01)
    interrupted_finetune(tiny_model_dir, rte, out_dir, config, 2, monkeypatch,
                         hp=other_hp if damage == "hyperparameters" else HP)
    if damage == "member":
        flip_a_byte(member_path(staging, 0))
    elif damage == "tensors":
        flip_a_byte(next(staging.glob("state-step*.safetensors")))
    elif damage == "truncated json":
        state = staging / "state.json"
        state.write_text(state.read_text()[:100])
    capsys.readouterr()

    finetune(tiny_model_dir, rte, out_dir, config)
    out = capsys.readouterr().out
    assert "ignoring the resume state" in out and reason in out and "resumed from" not in out
    assert finetune_results(out_dir) == uninterrupted_finetunes[3, 0.5]


def test_state_of_another_run_raises_when_read(tiny_model_dir, rte, tmp_path, monkeypatch):
    out_dir = tmp_path / "members"
    interrupted_finetune(tiny_model_dir, rte, out_dir, finetune_config(), 1, monkeypatch)
    identity = read_json(out_dir.with_suffix(".resume") / "state.json")["identity"]
    with pytest.raises(StaleStateError, match="different seed"):
        bomf.train.resume.read_training_state(out_dir.with_suffix(".resume"), {**identity, "seed": 1})


def without_seconds(trajectory: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in trajectory]


@pytest.mark.parametrize("states", [1, 5])
def test_a_killed_stage1_trial_resumes_to_the_same_record(tiny_model_dir, rte, tmp_path, monkeypatch, capsys,
                                                          states):
    """A proxy trial (2 epochs of 4 steps) killed after its states-th periodic state (here: after every step)
    resumes from it and records what the uninterrupted trial records."""
    spec = {"source": str(tiny_model_dir), "proxy_frozen_layers": 1, "proxy_frozen_embeddings": False}
    params = {"learning_rate": 1e-3, "batch_size": 8}

    def trial(staging):
        return run_trial(spec, RTE, rte, params, JOB_OPTIM, True, 2, 0, CPU, staging_dir=staging, checkpoint_seconds=1e-9)

    expected = trial(tmp_path / "reference.resume")
    staging = tmp_path / "trial0.resume"
    with killed_after_states(monkeypatch, states):
        trial(staging)
    assert read_json(staging / "state.json")["step"] == states
    capsys.readouterr()
    resumed = trial(staging)
    assert f"resumed from step {states}" in capsys.readouterr().out
    assert (resumed.score, resumed.loss) == (expected.score, expected.loss)
    assert without_seconds(resumed.trajectory) == without_seconds(expected.trajectory)
    assert not staging.exists() and not (tmp_path / "reference.resume").exists()


@pytest.mark.parametrize("states", [3, 9])
def test_a_killed_grid_run_resumes_with_its_best_checkpoint_and_average(tiny_model_dir, rte, tmp_path, monkeypatch,
                                                                        capsys, states):
    """A grid fine-tune (6 steps an epoch, scored at 6, 8, 10, 12) killed before its first evaluation (step 3) and
    after its best checkpoint and two member steps (step 9) resumes with what it kept: the same record and the
    same best checkpoint as the uninterrupted run."""
    finetune, params = {"epochs": 2, "members": 3, "start_fraction": 0.5}, {"learning_rate": 5e-4, "batch_size": 6}

    def grid_run(staging):
        spec = {"source": str(tiny_model_dir), "proxy_frozen_embeddings": False}
        return train_keeping_best(spec, RTE, rte, params, JOB_OPTIM, finetune, 1, 0, CPU, staging_dir=staging,
                                  checkpoint_seconds=1e-9)

    expected, expected_best = grid_run(tmp_path / "reference.resume")
    staging = tmp_path / "point0.resume"
    with killed_after_states(monkeypatch, states):
        grid_run(staging)
    assert read_json(staging / "state.json")["step"] == states
    capsys.readouterr()
    record, best = grid_run(staging)
    assert f"resumed from step {states}" in capsys.readouterr().out
    assert (record.best, record.best_step, record.swa) == (expected.best, expected.best_step, expected.swa)
    assert without_seconds(record.trajectory) == without_seconds(expected.trajectory)
    assert best.keys() == expected_best.keys() and all(torch.equal(best[k], expected_best[k]) for k in best)
    assert not staging.exists()


@pytest.mark.parametrize("method", ["swa", "bomf"])
def test_rerun_after_a_failed_save_records_the_chosen_fusion(tiny_model_dir, tmp_path, monkeypatch, method):
    """A fuse job killed while writing its record (its last scoring already journaled) is rerun: every
    evaluation is replayed without touching the model, yet the model rebuilt from the record must be
    Σ wᵢθᵢ of the recorded weights and score what the record says."""
    from safetensors.torch import load_file

    from bomf import pipeline
    from bomf.config import validate_config
    from bomf.io import write_jsonl
    from bomf.records import SelectedModel
    from conftest import tiny_config

    rows = read_glue_tsv(RTE, GLUE_DIR / "RTE" / "train.tsv")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = {"train": SequenceData(rows[:32], tokenizer, 64, RTE), "val": SequenceData(rows[32:48], tokenizer, 64, RTE)}
    members_dir, data_dir = tmp_path / "members", tmp_path / "data"
    finetune(tiny_model_dir, data, members_dir, finetune_config())
    write_jsonl(data_dir / "val.jsonl", rows[32:48])
    config = validate_config(tiny_config(tiny_model_dir, fusion={"initial_points": 1, "evaluations": 2}))
    out_dir, journal = tmp_path / "fusion" / method, tmp_path / "fusion" / f"{method}.journal.jsonl"

    def fuse():
        pipeline.fuse(config, "rte", "tiny", 0, data_dir, members_dir, method, out_dir, journal)

    with monkeypatch.context() as patch:
        patch.setattr(SelectedModel, "write", lambda *args: (_ for _ in ()).throw(Interrupted()))
        with pytest.raises(Interrupted):
            fuse()
    assert journal.is_file()
    shutil.rmtree(out_dir, ignore_errors=True)  # Snakemake removes a failed job's output
    fuse()
    assert not journal.exists()

    record = SelectedModel.read(out_dir)
    members = [load_file(str(member_path(members_dir, k))) for k in range(len(record.weights))]
    rebuilt, _ = pipeline.selected_model(pipeline.Run(config, "rte", "tiny", 0), members_dir, out_dir)
    for name, tensor in members[0].items():
        if tensor.is_floating_point():
            expected = sum(w * member[name].double() for w, member in zip(record.weights, members))
            torch.testing.assert_close(rebuilt.state_dict()[name].double(), expected, rtol=0, atol=1e-6, msg=name)
    scores, _ = data["val"].evaluate(rebuilt, list(RTE.metrics), config["optim"]["eval_batch_size"], CPU)
    assert scores == pytest.approx(record.validation, abs=1e-6)


# --------------------------------------------------------------------------- fusion journal

SEARCH = {"acquisition": "qLogNEHVI", "initial_points": 2, "evaluations": 4, "selection": "best_metric",
          "mc_samples": 32, "restarts": 2, "raw_samples": 64}
OPTIMUM = torch.tensor([0.5, 0.3, 0.2], dtype=torch.double)
IDENTITY = {"test": "journal"}


class Synthetic:
    """Loss and accuracy of weights near ``OPTIMUM``; counts its calls and can stop after ``stop_after``."""

    names = ["loss", "accuracy"]
    task = RTE

    def __init__(self, stop_after: int | None = None):
        self.calls, self.stop_after = 0, stop_after

    def __call__(self, weights: torch.Tensor) -> dict:
        if self.calls == self.stop_after:
            raise Interrupted
        self.calls += 1
        distance = float(torch.linalg.vector_norm(weights - OPTIMUM))
        return {"loss": 0.3 + distance**2, "accuracy": 0.9 - 0.5 * distance}


MEMBER_SCORES = [Synthetic()(torch.eye(3, dtype=torch.double)[i]) for i in range(3)]


def search(journal: Path | None, objective: Synthetic, seed: int = 0) -> pd.DataFrame:
    history, _ = run_mobo(JournaledObjective(objective, journal, IDENTITY), MEMBER_SCORES, SEARCH, seed)
    return history


def without_timings(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=TIMING_COLUMNS)


@pytest.fixture(scope="module")
def uninterrupted_search():
    return search(None, Synthetic())


@pytest.mark.parametrize("done", [1, 3])
def test_resumed_search_replays_its_journal(tmp_path, monkeypatch, capsys, uninterrupted_search, done):
    """``done`` evaluations (2 Sobol points, then BO) are journaled before the kill; the rerun replays them,
    proposes only the remaining BO points and evaluates only those."""
    journal = tmp_path / "bomf.journal.jsonl"
    with pytest.raises(Interrupted):
        search(journal, Synthetic(stop_after=done))
    assert len(journal.read_text().splitlines()) == 1 + done

    proposals = []
    propose = bomf.fuse.mobo.propose
    monkeypatch.setattr(bomf.fuse.mobo, "propose", lambda *args: proposals.append(args) or propose(*args))
    objective = Synthetic()
    resumed = JournaledObjective(objective, journal, IDENTITY)
    history, _ = run_mobo(resumed, MEMBER_SCORES, SEARCH, 0)

    pd.testing.assert_frame_equal(without_timings(history), without_timings(uninterrupted_search))
    assert objective.calls == SEARCH["evaluations"] - done
    assert resumed.replayed == done and resumed.evaluations == SEARCH["evaluations"]
    bo_done = max(done - SEARCH["initial_points"], 0)
    assert len(proposals) == SEARCH["evaluations"] - SEARCH["initial_points"] - bo_done
    # The replayed rows keep the times recorded when they were measured.
    records = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert list(history["eval_seconds"].iloc[3:]) == [r["seconds"] for r in records]
    assert list(history["bo_seconds"].iloc[3:]) == [r["proposal_seconds"] for r in records]
    assert len(records) == SEARCH["evaluations"]


def test_stale_journal_is_dropped(tmp_path, capsys, uninterrupted_search):
    """A journal whose weights are not those asked for (here: another seed's Sobol points) is dropped from
    the first mismatch on, and its file rewritten; every point is evaluated."""
    journal = tmp_path / "bomf.journal.jsonl"
    with pytest.raises(Interrupted):
        search(journal, Synthetic(stop_after=3), seed=1)
    capsys.readouterr()
    objective = Synthetic()
    history = search(journal, objective)
    assert "dropping the 3 stale records" in capsys.readouterr().out
    assert objective.calls == SEARCH["evaluations"]
    pd.testing.assert_frame_equal(without_timings(history), without_timings(uninterrupted_search))
    assert len(journal.read_text().splitlines()) == 1 + SEARCH["evaluations"]


def test_journal_of_other_inputs_and_torn_lines(tmp_path, capsys):
    journal = tmp_path / "bomf.journal.jsonl"
    with pytest.raises(Interrupted):
        search(journal, Synthetic(stop_after=3))
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:3]) + lines[3][:20])  # the last line torn by a kill mid-write
    objective = Synthetic()
    resumed = JournaledObjective(objective, journal, IDENTITY)
    assert resumed.next_weights() == json.loads(lines[1])["weights"] and len(resumed.pending) == 2
    assert journal.read_text() == "".join(lines[:3])

    capsys.readouterr()
    other = JournaledObjective(Synthetic(), journal, {"test": "other members"})
    assert other.next_weights() is None and "written for other inputs" in capsys.readouterr().out
    assert journal.read_text().splitlines() == [json.dumps({"identity": {"test": "other members"}})]
    other.discard()
    assert not journal.exists()


def test_journal_round_trips_weights_and_scores_exactly(tmp_path):
    journal = tmp_path / "journal.jsonl"
    points = [torch.tensor([1 / 3, 2 / 7, 1 - 1 / 3 - 2 / 7], dtype=torch.double), torch.full((3,), 1 / 3)]
    scores = [{"loss": 0.1 + 0.2, "accuracy": 1 / 3}, {"loss": math.nan, "accuracy": math.nan}]  # a diverged mix
    first = JournaledObjective(lambda w: scores[len(first.records)], journal, IDENTITY)
    assert [first(point) for point in points] == scores[:1] + [first.records[1]["scores"]]
    replay = JournaledObjective(lambda w: pytest.fail("evaluated again"), journal, IDENTITY)
    replayed = [replay(point) for point in points]
    assert replayed[0] == scores[0] and all(math.isnan(v) for v in replayed[1].values())
    assert replay.replayed == 2 and replay.evaluations == 2


# --------------------------------------------------------------------------- end to end, real SIGKILLs

TARGET = "results/rte/tiny/seed0/test/bomf.json"
RUN = Path("results/rte/tiny/seed0")
LOGS = Path("logs/rte/tiny/seed0")
# tiny.yaml with a longer fine-tune (members from a quarter of training on) and a longer BO search, so there
# is time to kill the jobs after their first resumable state or journaled BO point; one stage-1 round only,
# to keep the three runs below short.
OVERRIDES = {"hpo": {"rounds": 1}, "finetune": {"epochs": 16, "start_fraction": 0.25},
             "fusion": {"evaluations": 6}}
JOURNAL_LINES = 1 + 3 + 6 + 1  # identity, members, the search's budget, the chosen weights' final scoring


def start_snakemake(workdir: Path, config: Path) -> subprocess.Popen:
    """Snakemake on TARGET, its output in a file (a pipe could fill up and block it while tests poll)."""
    workdir.mkdir(exist_ok=True)
    command = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(config), "--cores", "2", TARGET]
    with open(workdir.with_suffix(".out"), "a") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir)


def finish(process: subprocess.Popen, workdir: Path) -> tuple[int, str]:
    returncode = process.wait(timeout=900)
    return returncode, workdir.with_suffix(".out").read_text()


def job_processes(script: str, workdir: Path) -> list[int]:
    """The processes running a rule's script in ``workdir`` (Snakemake runs a copy of it, named
    .snakemake/scripts/tmp<random>.<script>, from the working directory)."""
    pids = []
    for process in Path("/proc").glob("[0-9]*"):
        try:
            arguments = (process / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(process / "cwd"))
        except OSError:  # ended meanwhile, or another user's
            continue
        if cwd == workdir.resolve() and any(a.endswith(f".{script}".encode()) for a in arguments):
            pids.append(int(process.name))
    return pids


def kill_job_when(process: subprocess.Popen, workdir: Path, script: str, ready, rule: str) -> str:
    """SIGKILL the job running ``script`` as soon as ``ready()`` holds while it runs; returns Snakemake's
    output once it has exited (with an error, for that job)."""
    deadline = time.monotonic() + 900
    killed = False
    while not killed:
        assert process.poll() is None, f"snakemake ended before {script} could be killed"
        assert time.monotonic() < deadline, f"{script} never became ready to kill"
        pids = job_processes(script, workdir)
        if pids and ready():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                except ProcessLookupError:  # that process has just ended by itself
                    pass
        time.sleep(0.02)
    returncode, output = finish(process, workdir)
    assert returncode != 0 and f"Error in rule {rule}" in output, output[-3000:]
    return output


def journal_lines(workdir: Path) -> int:
    journal = workdir / RUN / "fusion/bomf.journal.jsonl"
    return journal.read_text().count("\n") if journal.is_file() else 0


def results(workdir: Path) -> dict:
    """Everything a run produced that must not depend on interruptions or on the directory (no timings)."""
    run = workdir / RUN
    history = pd.read_csv(run / "fusion/bomf/history.csv")
    weights = read_json(run / "fusion/bomf/weights.json")
    test = read_json(run / "test/bomf.json")
    return {
        "best": read_json(run / "hpo/best.json"),
        "members": read_json(run / "members/members.json"),
        "trajectory": pd.read_csv(run / "members/trajectory.csv").drop(columns="seconds").to_dict("list"),
        "weights": {key: weights[key] for key in ("weights", "validation", "evaluations")},
        "history": history.drop(columns=TIMING_COLUMNS).to_dict("list"),
        "test": {key: test[key] for key in ("test", "validation", "predictions")},
    }


@pytest.fixture(scope="module")
def run_config(tiny_model_dir, tmp_path_factory) -> Path:
    return write_tiny_config(tmp_path_factory.mktemp("config") / "config.yaml", tiny_model_dir, **OVERRIDES)


@pytest.fixture(scope="module")
def reference_run(run_config, tmp_path_factory) -> Path:
    """An uninterrupted run of TARGET, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    returncode, output = finish(start_snakemake(workdir, run_config), workdir)
    assert returncode == 0, output[-5000:]
    return workdir


@pytest.mark.slow
def test_killed_jobs_resume_to_identical_results(run_config, reference_run, tmp_path):
    workdir = tmp_path / "run"
    members = read_json(reference_run / RUN / "members/members.json")
    staging = workdir / RUN / "members.resume"

    # (a) A stage-1 trial: its job simply runs again.
    kill_job_when(start_snakemake(workdir, run_config), workdir, "hpo_trial.py", lambda: True, "hpo_trial")

    # (b) The fine-tune, once it has written a resumable state.
    kill_job_when(start_snakemake(workdir, run_config), workdir, "finetune.py",
                  lambda: (staging / "state.json").is_file(), "finetune")
    resumed_step = read_json(staging / "state.json")["step"]
    assert resumed_step < members["steps"][-1] and not (workdir / RUN / "members/members.json").exists()

    # (c) The BO fusion search, after its first BO point is journaled.
    kill_job_when(start_snakemake(workdir, run_config), workdir, "fuse.py",
                  lambda: journal_lines(workdir) >= 1 + 3 + 2 + 1, "fuse")
    journaled = journal_lines(workdir) - 1
    assert journaled < JOURNAL_LINES - 1 and not (workdir / RUN / "fusion/bomf").exists()

    returncode, output = finish(start_snakemake(workdir, run_config), workdir)
    assert returncode == 0, output[-5000:]
    assert f"resumed from step {resumed_step}" in (workdir / LOGS / "finetune.log").read_text()
    assert f"replayed {journaled} journaled evaluations" in (workdir / LOGS / "fusion/bomf.log").read_text()
    assert not staging.exists() and journal_lines(workdir) == 0  # removed once their jobs completed
    assert results(workdir) == results(reference_run)


@pytest.mark.slow
def test_two_runs_give_identical_results(run_config, reference_run, tmp_path):
    workdir = tmp_path / "run"
    returncode, output = finish(start_snakemake(workdir, run_config), workdir)
    assert returncode == 0, output[-5000:]
    assert results(workdir) == results(reference_run)
    assert "replayed 0 journaled evaluations" in (workdir / LOGS / "fusion/bomf.log").read_text()


# --------------------------------------------------------------------------- landscape and oracle journals

@pytest.fixture(scope="module")
def scoring_run(tiny_model_dir, tmp_path_factory) -> dict:
    """The inputs of the landscape and oracle jobs: three members fine-tuned on RTE, the validation and test
    splits as prepare_data writes them, SWA's record (the landscape projects it) and the tiny config."""
    from bomf import pipeline
    from bomf.config import validate_config
    from bomf.io import write_jsonl
    from conftest import tiny_config

    rows = read_glue_tsv(RTE, GLUE_DIR / "RTE" / "train.tsv")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    root = tmp_path_factory.mktemp("scoring")
    job = {"config": validate_config(tiny_config(tiny_model_dir)), "task": "rte", "model": "tiny", "seed": 0,
           "data_dir": root / "data", "members_dir": root / "members"}
    finetune(tiny_model_dir, {"train": SequenceData(rows[:32], tokenizer, 64, RTE),
                              "val": SequenceData(rows[32:48], tokenizer, 64, RTE)}, job["members_dir"],
             finetune_config())
    write_jsonl(job["data_dir"] / "val.jsonl", rows[32:48])
    write_jsonl(job["data_dir"] / "test.jsonl", rows[48:64])
    pipeline.fuse(**job, method="swa", out_dir=root / "swa", journal=root / "swa.journal.jsonl")
    return {**job, "swa": root / "swa"}


def loss_landscape(job: dict, out_dir: Path, journal: Path, **landscape) -> None:
    from bomf import pipeline

    figures = {**job["config"]["figures"], "landscape": {**job["config"]["figures"]["landscape"], **landscape}}
    pipeline.loss_landscape(**{key: job[key] for key in ("task", "model", "seed", "data_dir", "members_dir")},
                            config={**job["config"], "figures": figures}, fusion_dirs={"swa": job["swa"]},
                            out_dir=out_dir, journal=journal)


def oracle_subset(job: dict, out_dir: Path, journal: Path, data_dir: Path | None = None) -> None:
    from bomf import pipeline

    pipeline.oracle_subset(**{key: job[key] for key in ("config", "task", "model", "seed", "members_dir")},
                           data_dir=data_dir or job["data_dir"], out_dir=out_dir, journal=journal)


def scored_calls(monkeypatch, stop_after: int | None = None) -> list:
    """Counts the models actually scored (a replayed evaluation scores none); raises Interrupted instead of
    scoring after ``stop_after`` of them, as a kill would stop the job."""
    from bomf.fuse.fusion import FusionObjective

    score, calls = FusionObjective.score, []

    def counted(objective):
        if len(calls) == stop_after:
            raise Interrupted
        calls.append(None)
        return score(objective)

    monkeypatch.setattr(FusionObjective, "score", counted)
    return calls


def directory_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


LANDSCAPE_POINTS = 25  # tiny.yaml: a 5 x 5 grid
ORACLE_SUBSETS = 6  # three members, oracle_max_subsets 4 < 7 subsets: the 6 runs of consecutive members


@pytest.fixture(scope="module")
def uninterrupted_landscape(scoring_run, tmp_path_factory) -> dict[str, bytes]:
    out_dir = tmp_path_factory.mktemp("landscape") / "landscape"
    loss_landscape(scoring_run, out_dir, out_dir.with_suffix(".journal.jsonl"))
    assert not out_dir.with_suffix(".journal.jsonl").exists()
    return directory_files(out_dir)


@pytest.fixture(scope="module")
def uninterrupted_oracle(scoring_run, tmp_path_factory) -> dict[str, bytes]:
    out_dir = tmp_path_factory.mktemp("oracle") / "oracle_subset"
    oracle_subset(scoring_run, out_dir, out_dir.with_suffix(".journal.jsonl"))
    assert not out_dir.with_suffix(".journal.jsonl").exists()
    return directory_files(out_dir)


@pytest.mark.parametrize("done", [1, 11])
def test_an_interrupted_landscape_replays_its_journal(scoring_run, uninterrupted_landscape, tmp_path, monkeypatch,
                                                      capsys, done):
    """``done`` grid points (off the simplex from the first on: the grid starts at (-0.2, -0.2)) are journaled
    before the kill; the rerun replays exactly them and scores only the rest, to the same files."""
    out_dir, journal = tmp_path / "landscape", tmp_path / "landscape.journal.jsonl"
    with monkeypatch.context() as patch:
        scored_calls(patch, stop_after=done)
        with pytest.raises(Interrupted):
            loss_landscape(scoring_run, out_dir, journal)
    records = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert len(records) == done and min(records[0]["weights"]) < 0
    capsys.readouterr()
    with monkeypatch.context() as patch:
        calls = scored_calls(patch)
        loss_landscape(scoring_run, out_dir, journal)
    assert f"{LANDSCAPE_POINTS} grid points, replayed {done} journaled evaluations" in capsys.readouterr().out
    assert len(calls) == LANDSCAPE_POINTS - done
    assert directory_files(out_dir) == uninterrupted_landscape and not journal.exists()


def test_a_landscape_journal_for_other_settings_is_discarded(scoring_run, uninterrupted_landscape, tmp_path,
                                                             monkeypatch, capsys):
    """A journal of another grid (same first points: only ``high`` differs) is not replayed."""
    out_dir, journal = tmp_path / "landscape", tmp_path / "landscape.journal.jsonl"
    with monkeypatch.context() as patch:
        scored_calls(patch, stop_after=3)
        with pytest.raises(Interrupted):
            loss_landscape(scoring_run, out_dir, journal, high=2.0)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        calls = scored_calls(patch)
        loss_landscape(scoring_run, out_dir, journal)
    output = capsys.readouterr().out
    assert "written for other inputs or settings; discarding it" in output and "replayed 0 journaled" in output
    assert len(calls) == LANDSCAPE_POINTS
    assert directory_files(out_dir) == uninterrupted_landscape


def test_an_interrupted_oracle_replays_its_journal(scoring_run, uninterrupted_oracle, tmp_path, monkeypatch, capsys):
    """Four subsets scored on test before the kill; the rerun scores the other two and the chosen weights on
    validation (not journaled), to the same record and table."""
    out_dir, journal = tmp_path / "oracle_subset", tmp_path / "oracle_subset.journal.jsonl"
    with monkeypatch.context() as patch:
        scored_calls(patch, stop_after=4)
        with pytest.raises(Interrupted):
            oracle_subset(scoring_run, out_dir, journal)
    assert len(journal.read_text().splitlines()) == 1 + 4
    capsys.readouterr()
    with monkeypatch.context() as patch:
        calls = scored_calls(patch)
        oracle_subset(scoring_run, out_dir, journal)
    assert "replayed 4 journaled evaluations" in capsys.readouterr().out
    assert len(calls) == ORACLE_SUBSETS - 4 + 1
    assert directory_files(out_dir) == uninterrupted_oracle and not journal.exists()


def test_an_oracle_journal_for_another_test_split_is_discarded(scoring_run, tmp_path, monkeypatch, capsys):
    """The oracle scores the test split: its journal names that split's checksum, not validation's."""
    from bomf.io import write_jsonl

    data_dir = tmp_path / "data"
    shutil.copytree(scoring_run["data_dir"], data_dir)
    out_dir, journal = tmp_path / "oracle_subset", tmp_path / "oracle_subset.journal.jsonl"
    with monkeypatch.context() as patch:
        scored_calls(patch, stop_after=4)
        with pytest.raises(Interrupted):
            oracle_subset(scoring_run, out_dir, journal, data_dir)
    assert set(json.loads(journal.read_text().splitlines()[0])["identity"]["split"]) == {"test"}
    write_jsonl(data_dir / "test.jsonl", read_glue_tsv(RTE, GLUE_DIR / "RTE" / "train.tsv")[64:80])
    capsys.readouterr()
    with monkeypatch.context() as patch:
        calls = scored_calls(patch)
        oracle_subset(scoring_run, out_dir, journal, data_dir)
    output = capsys.readouterr().out
    assert "written for other inputs or settings; discarding it" in output and "replayed 0 journaled" in output
    assert len(calls) == ORACLE_SUBSETS + 1
