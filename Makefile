# Two commands set everything up on a fresh machine:
#   make chat   - build, fetch the default model, and open a chat with it
#   make test   - build, fetch the test models, and run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgessd-setup

.PHONY: setup chat test clean-venv

setup: $(STAMP)
	@$(PY) patches/build.py

# the venv, build tools, and edgessd itself (editable); the patched llama-cpp-python
# is installed by patches/build.py before pip would look for it on PyPI
$(STAMP): pyproject.toml patches/build.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check scikit-build-core==1.1.2 ninja
	$(PY) patches/build.py
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

chat: setup
	$(VENV)/bin/edgessd chat

test: setup
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
