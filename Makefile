# The README's two commands: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TEST_MODELS := .cache/test-models
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install demo-repository test-models bench clean

# torch goes first, in its own pip call: 2.13.0 is a CPU build on local disk, whereas letting
# optimum-intel resolve torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,export]'
	$(PIP) check
	touch $@

install: $(VENV)/.installed

demo-repository: install
	$(PY) tools/build_demo_repository.py --repository model_repository

test-models: install
	$(PY) tools/make_test_models.py $(TEST_MODELS)

serve: demo-repository
	$(PY) -m server serve --model-repository model_repository --host $(HOST) --port $(PORT)

test: test-models
	OVMS_TEST_MODELS=$(abspath $(TEST_MODELS)) $(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .cache *.egg-info
