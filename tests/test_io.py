"""Outputs are written whole or not at all, with the mode a plainly created file gets."""

import os
import stat

import pytest

from bomf.io import atomic_path, write_json


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        write_json(tmp_path / "record.json", {"a": 1})
        with atomic_path(tmp_path / "weights.bin") as tmp:
            tmp.write_bytes(b"\0")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("record.json", "weights.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_publish_keeps_small_records_and_merges_command_logs(tmp_path):
    """Runs made in two checkouts published into one directory: both keep their commands, in time order; weights
    stay behind."""
    from bomf.report.publish import publish

    for name, lines in (("a", ["2026-01-01T00:00:00Z\tc1\tsnakemake x", "2026-01-03T00:00:00Z\tc2\tsnakemake a"]),
                        ("b", ["2026-01-01T00:00:00Z\tc1\tsnakemake x", "2026-01-02T00:00:00Z\tc2\tsnakemake b"])):
        run = tmp_path / name / "mrpc/minilm/seed0"
        (run / "members").mkdir(parents=True)
        (run / "summary.csv").write_text(f"method\n{name}\n")
        (run / "members/member00.safetensors").write_bytes(b"weights")
        (tmp_path / name / "commands.log").write_text("".join(f"{line}\n" for line in lines))
        publish(tmp_path / name, tmp_path / "published")
    published = tmp_path / "published"
    assert [line.split("\t")[2] for line in (published / "commands.log").read_text().splitlines()] == [
        "snakemake x", "snakemake b", "snakemake a"]
    assert (published / "mrpc/minilm/seed0/summary.csv").read_text() == "method\nb\n"
    assert not list(published.rglob("*.safetensors"))


def test_publish_keeps_to_the_finished_runs(tmp_path):
    """--run: a finished run's records, benchmarks, figures and data record, while another run is still going."""
    from bomf.report.publish import publish

    source = tmp_path / "results"
    files = ["sst2/minilm/seed0/summary.csv", "benchmarks/sst2/minilm/seed0/finetune.tsv", "benchmarks/data/sst2.tsv",
             "figures/sst2/minilm/seed0/pareto.png", "data/sst2/split.json", "export/sst2/minilm/seed0/bomf/README.md",
             "commands.log", "cola/minilm/seed1/hpo/round0/trial0.json", "benchmarks/cola/minilm/seed1/hpo.tsv",
             "data/cola/split.json", "sst2/minilm/seed1/hpo/best.json", "tables/table1_main.md"]
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("x\n")
    copied = publish(source, tmp_path / "published", ["sst2/minilm/seed0"])
    assert sorted(map(str, copied)) == sorted(files[:7])
