# Shared by scripts/serve and scripts/test: a project-local virtualenv in .venv, installed
# (again) only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

pick_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "voipcloud needs Python 3.11 or newer" >&2
  return 1
}

ensure_venv() {  # $1: extras, such as "[test]" or ""
  local extras="$1" stamp
  stamp="$(cat pyproject.toml tests/requirements-generator.txt | sha256sum | cut -c1-16)${extras}"
  if [ ! -x .venv/bin/python ]; then
    if ! "$(pick_python)" -m venv .venv 2>/dev/null; then
      # Debian ships venv separately
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$(pick_python)" -m venv .venv
    fi
  fi
  if [ "$(cat .venv/.voipcloud-installed 2>/dev/null)" != "$stamp" ]; then
    echo "voipcloud: installing into .venv ..." >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras}"
    if [ "$extras" = "[test]" ]; then
      # openapi-python-client pins an older typer for its own command line; the tests use
      # its library only, so it is installed without its dependencies (see that file)
      .venv/bin/python -m pip install --quiet --no-deps -r tests/requirements-generator.txt
    fi
    echo "$stamp" > .venv/.voipcloud-installed
  fi
}

ensure_chromium() {  # the browser tests drive Debian's chromium (no browser downloads here)
  if [ ! -x /usr/bin/chromium ]; then
    echo "voipcloud: installing chromium for the browser tests ..." >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
  fi
}
