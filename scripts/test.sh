#!/usr/bin/env bash
# The whole test suite on a fresh machine: Python tools in a virtualenv, the AWS emulator on a
# free loopback port, the Rust tests against it, then the template and event checks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
scripts/venv.sh
. scripts/emulator.sh
# The load tests saturate the emulator (it serves one request at a time), so they run on their
# own, after the rest, instead of slowing every other test into its timeouts.
cargo test --locked "$@" -- --skip load::
cargo test --locked --test integration "$@" -- load:: --test-threads=1
if [ -d tests/template ]; then
  MOTO_ENDPOINT_URL="$EC2Q_TEST_ENDPOINT" "$EC2Q_VENV/bin/python" -m pytest -q tests/template
fi
