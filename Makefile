# The course's commands. Two do all the set-up themselves on a fresh machine:
#   make book   build the book to HTML (executes every notebook; warnings are errors)
#   make test   run every test (unit tests, notebooks, exercise checks, sync and book checks)
# Both create .venv with the pinned dependencies on first use (torch 2.13.0 CPU build).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EDITION ?= public
# The mode the notebooks run in (coursekit/config.py): fast (default; what CI and `make test` use)
# or full (the sizes that give good results; what the published book shows). COURSEKIT_MODE, when
# set in the environment, is taken as the default. Each mode builds into its own folder, because
# the executed-notebook cache is keyed by the notebooks' code, not by the mode.
MODE ?= $(or $(COURSEKIT_MODE),fast)
ifeq ($(filter $(MODE),fast full),)
  $(error MODE must be 'fast' or 'full', got '$(MODE)')
endif
export COURSEKIT_MODE := $(MODE)
# Public edition: _toc.yml (lectures + exercises). Instructor edition: solutions instead.
ifeq ($(EDITION),instructor)
  TOC := book/_toc_instructor.yml
  OUT := _build/instructor$(if $(filter full,$(MODE)),-full)
else ifeq ($(EDITION),public)
  TOC := _toc.yml
  OUT := $(if $(filter full,$(MODE)),_build/full,.)
else
  $(error EDITION must be 'public' or 'instructor', got '$(EDITION)')
endif
HTML := $(if $(filter .,$(OUT)),_build/html,$(OUT)/_build/html)
export COURSEKIT_QUIET := 1

.PHONY: help setup book test sync page clean browser-check
help:
	@echo "make book [EDITION=instructor] [MODE=full]"
	@echo "                                 build the book (HTML) with every notebook executed (MODE=full: the"
	@echo "                                 full-size models, into _build/full; fast by default)"
	@echo "make test                        run every test (builds the public book first)"
	@echo "make sync [RELEASE=1]            regenerate exercises/ and the .ipynb files (RELEASE=1: refuse placeholders)"
	@echo "make page PAGES='a.md b.md'      build only these pages into /tmp (for authors)"

setup: $(STAMP)
$(STAMP): requirements/book.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.10+"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/book.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

book: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/jupyter-book build . --toc $(TOC) --path-output $(OUT) -W -n --keep-going && \
	echo "Built the $(EDITION) edition ($(MODE) mode) in $$(( $$(date +%s) - start )) s: open $(CURDIR)/$(HTML)/index.html" \
	     "(or serve it: $(BIN)/python -m http.server -d $(HTML) 8000)"

# make sync RELEASE=1: the same, but fails when the repository URL is still the placeholder or the
# pinned ref (coursekit: ref: in _config.yml) is a branch (see CONTRIBUTING.md, "Releasing").
sync: $(STAMP)
	$(BIN)/coursekit sync $(if $(RELEASE),--release)

test: $(STAMP)
	bash scripts/test.sh

page: $(STAMP)
	@test -n "$(PAGES)" || { echo "usage: make page PAGES='lectures/03_x.md solutions/ex03_x.md'"; exit 2; }
	bash scripts/build_pages.sh $(PAGES)

clean:
	rm -rf _build
