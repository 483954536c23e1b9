#!/usr/bin/env bash
# The GPU check in one command, on a host whose Python and packages are known only once looked at, and without
# network access (benchmarks/README.md, "GPU check"):
#
#     OUT=<results folder> bash benchmarks/gpu_check.sh [cuda|cpu]       # from the repository root
#
# Needs benchmarks/gpu_bundle/ (python benchmarks/gpu_bundle.py build, on a machine with PyPI). Logs the host
# first; then, in a venv over the host's Python (--system-site-packages: its CUDA torch stays), installs from the
# bundle what the host lacks or has at another version, and the project; then runs gpu_check.py under a time
# limit. Whatever fails on the way, $OUT holds what was learned, and the check still runs on what there is.
set -u
DEVICE=${1:-cuda}
OUT=${OUT:-$PWD/gpu_check_out}
LIMIT=${GPU_CHECK_SECONDS:-420}  # the check's share of the ~8 minutes; the host log and installs take the rest
cd "$(dirname "$0")/.."
BUNDLE=$PWD/benchmarks/gpu_bundle
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/gpu_check.sh.log") 2>&1
STARTED=$SECONDS
PY=${PYTHON:-$(command -v python3 || command -v python)}
SETUP=()  # what went differently than planned, for the report

echo "== host ($(date -u '+%Y-%m-%d %H:%M:%S UTC')), device $DEVICE, python $PY"
{
    date -u; uname -a; echo "nproc $(nproc)"; free -g; df -h . /tmp
    echo "== python"; which -a python3 python pip3 pip 2>&1; "$PY" -VV; "$PY" -m pip --version
    echo "== nvidia-smi"; nvidia-smi 2>&1
    nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,mig.mode.current --format=csv 2>&1
    echo "== environment"; env | grep -E '^(CUDA|NVIDIA|SLURM|PYTHON|VIRTUAL_ENV|CONDA|LD_LIBRARY|PATH)' | sort
} > "$OUT/host.txt" 2>&1
"$PY" -m pip list > "$OUT/pip_list.txt" 2>&1
"$PY" -m pip freeze > "$OUT/pip_freeze.txt" 2>&1
"$PY" - > "$OUT/torch.txt" 2>&1 <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    print(i, torch.cuda.get_device_name(i), "capability", torch.cuda.get_device_capability(i),
          "bf16", torch.cuda.is_bf16_supported())
EOF
cat "$OUT/torch.txt"
nvidia-smi -L 2>&1 | head -4

echo "== venv and installs ($((SECONDS - STARTED)) s)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
VENV=$WORK/venv
RUN=$PY
if "$PY" -m venv --system-site-packages "$VENV" >> "$OUT/install.log" 2>&1 \
    || "$PY" -m venv --system-site-packages --without-pip "$VENV" >> "$OUT/install.log" 2>&1; then
    RUN=$VENV/bin/python
else
    SETUP+=("no venv could be made: the host's Python and packages as they are")
fi
if [ "$RUN" != "$PY" ] && "$RUN" -m pip --version >> "$OUT/install.log" 2>&1; then
    "$RUN" benchmarks/gpu_bundle.py plan --bundle "$BUNDLE" --out "$OUT/install_plan.json" > "$WORK/install.txt" \
        2>> "$OUT/install.log" || SETUP+=("the install plan failed (install.log)")
    PIP=("$RUN" -m pip install --no-index --no-deps --disable-pip-version-check --find-links "$BUNDLE/wheels")
    if [ -s "$WORK/install.txt" ] && ! "${PIP[@]}" -r "$WORK/install.txt" >> "$OUT/install.log" 2>&1; then
        # One wheel that does not install fails the whole call: the others one at a time.
        while read -r spec; do
            "${PIP[@]}" "$spec" >> "$OUT/install.log" 2>&1 || SETUP+=("not installed: $spec")
        done < "$WORK/install.txt"
    fi
    # The project itself, with the host's setuptools (no index to fetch a build backend from).
    "$RUN" -m pip install --no-index --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1 \
        || SETUP+=("the project's editable install failed (install.log): bomf is imported from workflow/")
    "$RUN" -m pip list > "$OUT/pip_list_venv.txt" 2>&1
else
    SETUP+=("no pip in the venv: nothing installed from the bundle")
fi
echo "installed $(grep -c . "$WORK/install.txt" 2>/dev/null || echo 0) packages from the bundle; ${SETUP[*]:-}"

echo "== gpu_check.py ($((SECONDS - STARTED)) s)"
# The budget leaves a minute for the section that runs when it is spent; timeout is the backstop.
CHECK=(benchmarks/gpu_check.py --device "$DEVICE" --bundle "$BUNDLE" --workdir "$WORK/check"
       --installed "$OUT/install_plan.json" --budget $((LIMIT - 60)) --setup "${SETUP[*]:-}")
timeout --kill-after=10 "$LIMIT" "$RUN" "${CHECK[@]}" --out "$OUT/gpu_check.json"
STATUS=$?
# 0: every section passed, 1: one failed; anything else (an import error, a crash, the time limit) with no
# report left: what the host's own Python can run.
if [ $STATUS -gt 1 ] && [ ! -s "$OUT/gpu_check.json" ] && [ "$RUN" != "$PY" ]; then
    LEFT=$((LIMIT - SECONDS + STARTED))
    echo "== the venv's run ended with status $STATUS and no report: again on the host's Python (${LEFT} s)"
    SETUP+=("the venv's run failed (status $STATUS): run on the host's Python")
    CHECK[-1]="${SETUP[*]}"
    timeout --kill-after=10 "$((LEFT > 60 ? LEFT : 60))" "$PY" "${CHECK[@]}" \
        --workdir "$WORK/check-host" --out "$OUT/gpu_check_host.json"
    STATUS=$?
fi
cp "$WORK/check/killed-finetune.log" "$OUT/" 2>/dev/null
echo "== done in $((SECONDS - STARTED)) s, status $STATUS; results in $OUT"
exit $STATUS
