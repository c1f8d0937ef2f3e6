# pneumo: two commands on a fresh machine: `make run` and `make test`. Both install into .venv first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# ONNX Runtime is the faster backend (bench/RESULTS.md): export the shipped checkpoints once after installing
ONNX_STAMP := models/.onnx-exported

.PHONY: install browser system-tools run test test-fast models clean

install: $(STAMP) browser system-tools $(ONNX_STAMP)

# Debian tools the integration tests drive: Orthanc + DICOMweb plugin (a real PACS), dicom3tools (dciodvfy) and
# dcmtk (dsrdump) to validate DICOM outputs, PostgreSQL 15 for the database tests. Installed when missing and root;
# the tests that need them skip with a clear reason elsewhere.
SYSTEM_TOOLS := /usr/sbin/Orthanc:orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb \
                /usr/bin/dciodvfy:dicom3tools /usr/bin/dsrdump:dcmtk /usr/lib/postgresql/15/bin/initdb:postgresql-15
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do [ -e "$${pair%%:*}" ] || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: missing Debian packages:$$missing (not root): their tests will be skipped"; fi; fi

# Debian's Chromium drives the browser tests (never a downloaded browser). Installed when missing and root.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium not found and not root: browser tests will be skipped (apt-get install chromium)"; fi; }

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(ONNX_STAMP): $(STAMP) models/unet.pt models/maskrcnn.pt models/chexnet.pt $(wildcard src/pneumo/export/*.py src/pneumo/models/*.py)
	$(VENV)/bin/pneumo export --model ensemble --format onnx
	touch $@

run: install
	$(VENV)/bin/pneumo demo

# --durations=15: the slowest tests, reported after every run
test: install
	$(PY) -m pytest -q --durations=15

# without the slow, browser and subprocess-heavy tests (markers in pyproject.toml)
test-fast: install
	$(PY) -m pytest -q --durations=15 -m "not slow and not browser and not subprocess"

# Re-make models/ as shipped (about 1.8 h on 2 quiet AVX-512 CPU cores, 2-3x that on older ones; progress: tail -f
# runs/models.log; interrupted? run it again: finished runs are skipped): the classifier and the detector
# cross-validated (5 folds) on rsna-mini + rsna-plus (1,247 patients), each shipped from its best fold, the ensemble
# (classifier + detector; unet stays out: see configs/experiments/unet-rsna-mini.yaml) and the
# calibration fitted on the out-of-fold outputs. Every family from scratch (many hours):
#   make models MODELS_EXPERIMENTS= MODELS_STAGES="pretrain cv report final ship"
MODELS_DATA        ?= ../shared/data/rsna-mini ../shared/data/rsna-plus
MODELS_NIH         ?= ../shared/data/nih-weak
MODELS_FOLDS       ?= 5
MODELS_STAGES      ?= cv report ship
MODELS_EXPERIMENTS ?= chexnet-lite0-256-e3 maskrcnn-lite0-256-e2
models: install
	mkdir -p runs
	$(VENV)/bin/pneumo models $(MODELS_STAGES) --data $(MODELS_DATA) --nih $(MODELS_NIH) --folds $(MODELS_FOLDS) \
	  $(if $(MODELS_EXPERIMENTS),--experiments $(MODELS_EXPERIMENTS)) --out runs/models --models models \
	  --docs docs/models.md >> runs/models.log 2>&1 || (tail -n 40 runs/models.log; exit 1)
	tail -n 25 runs/models.log

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
