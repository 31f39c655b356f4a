#!/usr/bin/env bash
# The whole test suite on a fresh machine: Python tools in a virtualenv, the AWS emulator on a
# free loopback port, the Rust tests against it, then the template and event checks and the
# local run of the binary (tests/demo).
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
# tests/demo drives the binary that cargo test built (for the integration tests) through a local
# Lambda Runtime API, as `make demo` does. Linked again first (nothing is rebuilt): while the tests
# ran, another checkout sharing the target directory may have put its own binary there.
cargo test --locked --no-run --quiet
EC2Q_BINARY=$(copy_binary)
export EC2Q_BINARY
MOTO_ENDPOINT_URL="$EC2Q_TEST_ENDPOINT" "$EC2Q_VENV/bin/python" -m pytest -q tests/template tests/demo
