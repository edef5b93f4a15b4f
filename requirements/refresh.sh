#!/usr/bin/env bash
# Refresh requirements/lock.txt from pyproject.toml (every extra) and requirements/pins.txt, then run the tests
# on it before committing. Needs pip-tools: pip install pip-tools
set -euo pipefail
cd "$(dirname "$0")/.."
pip-compile --quiet --resolver=backtracking --all-extras --strip-extras --no-emit-index-url --no-emit-find-links \
  --unsafe-package daa-age --constraint requirements/pins.txt --output-file requirements/lock.txt "$@" pyproject.toml
echo "wrote requirements/lock.txt; now: pip install -c requirements/lock.txt -e '.[dev]' && python -m pytest"
