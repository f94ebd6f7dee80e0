# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch 2.13.0 (scripts/install_torch.sh): the CPU build where pip already sees one, else from
# PyTorch's CPU index (10 s timeout), else PyPI's torch==2.13.0 (the multi-GB CUDA build on Linux);
# it prints which build it installed. Overrides, used as given:
#   make install TORCH=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH ?=
TORCH_INDEX ?=

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	TORCH="$(TORCH)" TORCH_INDEX="$(TORCH_INDEX)" bash scripts/install_torch.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bc-ray demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) demo-store bench-out
