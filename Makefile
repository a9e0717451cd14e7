# `make demo`: set up .venv and run the whole pipeline on the embedded digits data (CPU, minutes).
# `make test`: set up .venv and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch and torchvision go in first, pinned together: pip takes these from the machine's disk;
# any other torch request downloads several GB.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test,export,detect]' $(TORCH)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) tools/pipeline.py

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs *.egg-info
