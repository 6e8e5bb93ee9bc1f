#!/usr/bin/env bash
# Every test of the course (what `make test` and .ci/run run):
#   0. ruff over coursekit, tests and benchmarks (pyproject.toml's [tool.ruff]);
#   1. build the public book (executes every lecture; -W -n: warnings are errors);
#   2. pytest: package unit tests and doctests, exercise checks (pass / blank / mistakes), generated files in sync,
#      grading of every generated exercise notebook, the built HTML (offline, sidebar, Colab, math in Chromium),
#      and nbval over every solution notebook (the lectures were executed by step 1, where any error or failed
#      assertion in a cell stops the build: running them again under nbval would only double the time).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)

# Headless Chromium for the browser check and bubblewrap for the grader's sandbox (Debian packages;
# need root; about 30 s once).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing$missing..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
    || echo "warning: could not install$missing; the browser check and sandbox tests will say so"
fi

make --no-print-directory setup
.venv/bin/ruff check coursekit tests benchmarks  # lint first: seconds, and it names the line
make --no-print-directory book MODE=fast  # the tests read the fast-mode build in _build/html
t1=$(date +%s)

export COURSEKIT_MODE="${COURSEKIT_MODE:-fast}"
.venv/bin/python -m pytest -p no:cacheprovider --durations=15 \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=600 --doctest-modules \
  tests coursekit solutions "$@"
t2=$(date +%s)
echo "book build: $((t1 - t0)) s, tests: $((t2 - t1)) s, total: $((t2 - t0)) s"
