"""The GPU check (benchmarks/gpu_check.py) rehearsed on the CPU, so that the one call a lent GPU allows runs
the code as it is now: every section runs and every assertion it makes holds. Its bundle is built without the
wheels here (.venv has every package); benchmarks/README.md has the whole rehearsal, wheels and all."""

import json
import subprocess
import sys

import pytest
from conftest import DATA_DIR, REPO


@pytest.mark.slow
def test_the_gpu_check_passes_on_the_cpu(tmp_path):
    bundle, report = tmp_path / "bundle", tmp_path / "gpu_check.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_bundle.py"), "build", "--without-wheels",
                    "--bundle", str(bundle), "--data", str(DATA_DIR)], check=True, capture_output=True, timeout=300)
    result = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--device", "cpu", "--bundle",
                             str(bundle), "--workdir", str(tmp_path / "work"), "--out", str(report)],
                            capture_output=True, text=True, timeout=900)
    checked = json.loads(report.read_text())
    failed = {s["name"]: s["reason"] for s in checked["sections"] if s["status"] != "passed"}
    assert result.returncode == 0 and not failed, (failed, result.stdout[-3000:], result.stderr[-3000:])
    expected = {"environment", "models", "finetune_resume", "member_stack", "bomf_search", "import_members",
                "lora_generation", "determinism", "scoring_precision"}
    assert {s["name"] for s in checked["sections"]} == expected and checked["finished"]
    assertions = [a for s in checked["sections"] for a in s["assertions"]]
    assert len(assertions) >= 20 and all(a["passed"] for a in assertions)
