# Everything installs from nothing: `make test` and `make run` create .venv when missing.
# torch is pinned by a constraints file for every later pip call, so no extra can replace it
# (a looser torch spec downloads a CUDA build of several GB); the install fails loudly instead.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
ARGS ?=
CURVLINOPS_SPEC ?= curvlinops-for-pytorch==3.0.1
EXTRAS ?= test,lightning,huggingface,tensorboard,wandb,curvature,notebook,docs
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS := $(VENV)/constraints.txt

.PHONY: install test test-slow run bench clean schema docs serve-docs docs-cli

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml Makefile
	echo "$(TORCH_SPEC)" > $(CONSTRAINTS)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) --no-deps "$(CURVLINOPS_SPEC)"
	$(PY) -c "import importlib.metadata as m, sys; v = m.version('torch'); want = '$(TORCH_SPEC)'.split('==')[-1]; sys.exit(0 if v.split('+')[0] == want.split('+')[0] else f'torch {v} was installed where $(TORCH_SPEC) was asked for')"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# make run ARGS="--overwrite" (train again) or ARGS="--resume" (continue); any `dynamics run` option
run: $(STAMP)
	$(VENV)/bin/dynamics run $(ARGS)

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache site

schema: $(STAMP)
	$(PY) -c "import json; from trainers.config import json_schema; open('docs/config-schema.json', 'w', encoding='utf-8').write(json.dumps(json_schema(), indent=2, ensure_ascii=False) + '\n')"

# The documentation site (mkdocs.yml): built strictly (a broken link, anchor or API reference fails it).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

serve-docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --strict

# The generated reference pages: command line (the argparse parser), configuration keys, store schema.
docs-cli: $(STAMP)
	$(PY) scripts/docs_reference.py
