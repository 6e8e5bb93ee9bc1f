#!/usr/bin/env bash
# Build only the given pages (plus the landing page) into /tmp, with warnings as errors.
# For authors checking their chapter without building the whole book.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 lectures/03_x.md [more pages]"; exit 2; }
# the mode is part of the key: the execution cache keys notebooks by content, not by mode, so a shared
# folder would show a fast-mode run's outputs in a full-mode build (or the reverse)
key=$(printf '%s\n' "${COURSEKIT_MODE:-fast}" "$@" | md5sum | cut -c1-8)
out=/tmp/jb-pages-$key
mkdir -p "$out"
toc="$out/_toc.yml"
{ echo "format: jb-book"; echo "root: book/index"; echo "chapters:"
  for p in "$@"; do [ -f "$p" ] || { echo "no such page: $p" >&2; exit 2; }; echo "  - file: ${p%.*}"; done
  echo "  - file: book/bibliography"; } > "$toc"
.venv/bin/jupyter-book build . --toc "$toc" --path-output "$out" -W -n --keep-going
echo "pages built: $out/_build/html"
