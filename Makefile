# `make demo`: set up .venv and run the whole pipeline on the embedded digits data (CPU, minutes).
# `make test`: set up .venv and run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch and torchvision go in first, pinned together: pip takes these from the machine's disk;
# any other torch request downloads several GB.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-quick test-detectors clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test,export,detect]' $(TORCH)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) tools/pipeline.py

# --durations: CI's log names the slowest tests, so a slow one is seen when it lands.
test: setup
	$(PY) -m pytest -q --durations=25

# The edit loop: everything but the tests marked `slow` (trainers, exports, studies).
test-quick: setup
	$(PY) -m pytest -q -m 'not slow'

# yolov5 and yolo9 pin packages the main venv must not take (huggingface-hub 0.24 among them), so
# their tests run in a venv of their own. CI does not run this target: docs/DETECTORS.md says
# which detector code that leaves unverified there. yolov5 7.0 imports pkg_resources, which
# setuptools 81 removed, hence the pin.
DET_VENV ?= .venv-detectors
test-detectors:
	python3 -m venv $(DET_VENV)
	$(DET_VENV)/bin/python -m pip install -q --upgrade pip
	$(DET_VENV)/bin/python -m pip install -q $(TORCH)
	$(DET_VENV)/bin/python -m pip install -q -e '.[test,export,detect]' yolov5==7.0.14 yolo9==1.0.18 'setuptools<81' $(TORCH)
	$(DET_VENV)/bin/python -m pytest -q tests/test_detect_yolov5.py tests/test_detect_payloads.py tests/test_detect_safety.py
	$(DET_VENV)/bin/python -m pytest -q tests/test_detect_yolov9.py    # own process: yolo9 and yolov5 both claim `utils`

clean:
	rm -rf $(VENV) $(DET_VENV) runs *.egg-info
