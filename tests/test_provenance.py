"""Results carry what made them: the command, the commit, the config, library versions and the machine."""

import subprocess

from bomf.report.provenance import log_command, provenance
from conftest import REPO


def test_provenance_names_the_commit_versions_and_machine(monkeypatch):
    monkeypatch.chdir(REPO)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    record = provenance({"tasks": ["rte"]})
    assert record["commit"] in (head, f"{head}-dirty")
    assert record["config"] == {"tasks": ["rte"]}
    assert {"torch", "transformers", "botorch", "snakemake"} <= set(record["packages"])
    assert record["machine"]["cpus"] >= 1 and record["machine"]["cpu"]


def test_the_commit_is_the_codes_whatever_the_working_directory(tmp_path, monkeypatch):
    """snakemake --directory elsewhere: the results were still made by this checkout's code."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=REPO).stdout.strip()
    monkeypatch.chdir(tmp_path)
    assert provenance({})["commit"] in (head, f"{head}-dirty")


def test_only_changed_code_makes_the_commit_dirty(tmp_path, monkeypatch):
    """A run writes into the committed results/cpu/ records while it runs: that is not a code change."""
    import bomf.report.provenance

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    code = tmp_path / "workflow" / "bomf"
    code.mkdir(parents=True)
    (code / "fusion.py").write_text("weights = 1\n")
    (tmp_path / "results" / "cpu").mkdir(parents=True)
    (tmp_path / "results" / "cpu" / "commands.log").write_text("first\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "code and records")
    head = git("rev-parse", "HEAD")
    monkeypatch.setattr(bomf.report.provenance, "CODE_DIR", code)

    (tmp_path / "results" / "cpu" / "commands.log").write_text("first\nsecond\n")
    assert provenance({})["commit"] == head
    (code / "fusion.py").write_text("weights = 2\n")
    assert provenance({})["commit"] == f"{head}-dirty"


def test_code_outside_git_has_an_unknown_commit(tmp_path, monkeypatch):
    import bomf.report.provenance

    monkeypatch.setattr(bomf.report.provenance, "CODE_DIR", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance({})["commit"] is None
    log_command(tmp_path / "commands.log", ["snakemake", "all"])
    assert (tmp_path / "commands.log").read_text().split("\t")[1] == "unknown"


def test_each_command_is_appended(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "out" / "commands.log"
    log_command(log, ["/opt/venv/bin/snakemake", "all", "--config", "seeds=[0, 1]"])
    log_command(log, ["snakemake", "-j", "2"])
    lines = log.read_text().splitlines()
    assert [line.split("\t")[2] for line in lines] == ["snakemake all --config 'seeds=[0, 1]'", "snakemake -j 2"]
    assert lines[0].split("\t")[1] == provenance({})["commit"]  # the code's commit
