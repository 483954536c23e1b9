"""Job start-up: the wall time of the pipeline's cheap jobs from process start to exit, each run as Snakemake
runs a `script:` job (a fresh Python process executing workflow/scripts/<job>.py with a `snakemake` object),
on the files of a finished run, beside the import times of the libraries they used to pay for.

    .venv/bin/python benchmarks/job_startup.py --workdir DIR --configfile DIR/config.yaml [--repeats 5]

DIR is a finished run's working directory (e.g. the repository after `make demo`, or a tiny test run). Every
job writes into a temporary directory; nothing of the run is changed. Run it on an otherwise idle machine.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from bomf.config import validate_config  # noqa: E402

# What Snakemake's script preamble does before the body: import snakemake.script (for the unpickled object).
HARNESS = """
import json, runpy, sys
from types import SimpleNamespace
import snakemake.script
spec = json.load(open(sys.argv[1]))
class Files(list):
    def __init__(self, items, named):
        super().__init__(items)
        self.__dict__.update(named)
snakemake = SimpleNamespace(input=Files(spec["input"], spec.get("named_input", {})),
                            output=Files(spec["output"], spec.get("named_output", {})),
                            log=[spec["log"]], threads=1, wildcards=SimpleNamespace(**spec["wildcards"]),
                            params=SimpleNamespace(**spec.get("params", {})), config=spec["config"])
runpy.run_path(spec["script"], init_globals={"snakemake": snakemake}, run_name="__main__")
"""


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{result.stderr[-3000:]}")
    return elapsed


def jobs(workdir: Path, config: dict, scratch: Path) -> dict[str, dict]:
    """The cheap jobs of the first run of the config, with their real inputs and outputs in ``scratch``."""
    task, model, seed = config["tasks"][0], config["models"][0], config["seeds"][0]
    run = f"results/{task}/{model}/seed{seed}"
    trials = sorted(str(p.relative_to(workdir)) for p in (workdir / run / "hpo").glob("round*/trial*.json"))
    methods = [*config["fusion"]["methods"], *config["baselines"]["methods"]]
    runs = [f"results/{t}/{m}/seed{s}" for t in config["tasks"] for m in config["models"] for s in config["seeds"]]
    common = {"config": config, "log": str(scratch / "job.log")}
    wildcards = {"task": task, "model": model, "seed": str(seed), "search": "hpo"}
    return {
        # Round 0 is a Sobol design (no BoTorch); round 1 fits the GP and optimises qLogNEI for q points.
        "hpo_suggest round 0": {**common, "script": "workflow/scripts/hpo_suggest.py", "input": [],
                                "output": [str(scratch / "suggest0.json")], "wildcards": {**wildcards, "round": "0"}},
        "hpo_suggest round 1": {**common, "script": "workflow/scripts/hpo_suggest.py",
                                "input": [t for t in trials if "/round0/" in t],
                                "output": [str(scratch / "suggest.json")], "wildcards": {**wildcards, "round": "1"}},
        "hpo_select": {**common, "script": "workflow/scripts/hpo_select.py", "input": trials,
                       "output": [str(scratch / "trials.csv"), str(scratch / "best.json")],
                       "named_output": {"trials": str(scratch / "trials.csv"), "best": str(scratch / "best.json")},
                       "wildcards": wildcards},
        "summarise_run": {**common, "script": "workflow/scripts/summarise_run.py",
                          "input": [f"{run}/test/{m}.json" for m in methods],
                          "output": [str(scratch / "summary.csv"), str(scratch / "provenance.json")],
                          "named_output": {"summary": str(scratch / "summary.csv"),
                                           "provenance": str(scratch / "provenance.json")},
                          "wildcards": wildcards},
        "paper_tables": {**common, "script": "workflow/scripts/paper_tables.py",
                         "input": [], "named_input": {"tests": [f"{r}/test/{m}.json" for m in methods for r in runs],
                                                      "fusion": [f"{r}/fusion/{m}" for m in methods for r in runs]},
                         "output": [str(scratch / "tables" / "table1_main.csv")],
                         "named_output": {"provenance": str(scratch / "tables" / "provenance.json")}, "wildcards": {},
                         "params": {"benchmarks": "results/benchmarks"}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO)
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    config = yaml.safe_load(args.configfile.read_text())
    validate_config(config)
    python = sys.executable
    baselines = {"python -c pass": [python, "-c", "pass"],
                 "import torch": [python, "-c", "import torch"],
                 "import botorch": [python, "-c", "import botorch"]}
    rows = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "tables").mkdir()
        harness = scratch / "harness.py"
        harness.write_text(HARNESS)
        commands = dict(baselines)
        for name, spec in jobs(workdir, config, scratch).items():
            spec["script"] = str(REPO / spec["script"])
            spec_file = scratch / f"{name.replace(' ', '_')}.json"
            spec_file.write_text(json.dumps(spec))
            commands[f"job {name}"] = [python, str(harness), str(spec_file)]
        for name, command in commands.items():  # one warm-up each (page cache), then the measured runs
            timed(command, workdir)
        for _ in range(args.repeats):  # interleaved, so a slower moment of the machine hits every command
            for name, command in commands.items():
                rows.append((name, timed(command, workdir)))
    print(f"{'command':<26} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.repeats} runs each, {workdir})")
    for name in commands:
        values = [seconds for key, seconds in rows if key == name]
        print(f"{name:<26} {statistics.median(values):9.2f} {min(values):7.2f} {max(values):7.2f}")


if __name__ == "__main__":
    main()
