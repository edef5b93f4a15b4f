#!/usr/bin/env bash
# The test command (README's command 2): every set-up step the tests need, then pytest.
#
#   bash scripts/test.sh [--checks] [pytest arguments...]
#
# 1. System tools the tests drive for real: Debian's Chromium and ChromeDriver (the page's browser test) and
#    docker-compose (validates docker-compose.yml). Installed with apt when missing and this runs as root;
#    otherwise it stops and prints the one command that installs them.
# 2. A virtual environment: the active one, else ./.venv (made if missing), with the locked dependencies.
# 3. With --checks (what .ci/run passes): ruff, ruff format --check and mypy first, since they fail in seconds.
# 4. pytest, with any further arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

checks=0
if [ "${1:-}" = "--checks" ]; then
  checks=1
  shift
fi

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing ${need[*]} with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "scripts/test.sh: the tests need ${need[*]}; install them, then run this again:" >&2
    echo "  sudo apt-get install --no-install-recommends ${need[*]}" >&2
    exit 2
  fi
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
python -m pip install -q -c requirements/lock.txt -e ".[dev]"

if [ "$checks" = 1 ]; then
  ruff check .
  ruff format --check .
  mypy
fi

python -m pytest "$@"
