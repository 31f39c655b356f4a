#!/usr/bin/env bash
# Creates the Python virtualenv with the emulator (moto) and the template linters, once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/env.sh"
if [ ! -x "$EC2Q_VENV/bin/moto_server" ] || [ ! -f "$EC2Q_VENV/.complete" ]; then
  echo "setting up $EC2Q_VENV" >&2
  rm -rf "$EC2Q_VENV"
  python3 -m venv "$EC2Q_VENV"
  "$EC2Q_VENV/bin/pip" install --quiet --upgrade pip
  "$EC2Q_VENV/bin/pip" install --quiet -r "$root/requirements/test.txt"
  touch "$EC2Q_VENV/.complete"
fi
