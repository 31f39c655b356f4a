#!/usr/bin/env bash
# The local run: no AWS account, no Docker. Builds the function, starts the AWS emulator, builds
# a small account in it, sends two sample events through the real binary under a local Lambda
# Runtime API, and prints the instance before and after. Stops what it started, also on failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
scripts/venv.sh
cargo build --locked --bin ec2-quarantine
binary=$(copy_binary)
# Sourced: its EXIT trap stops the emulator however this script ends.
. scripts/emulator.sh
# Not exec: the shell must outlive the demo for the trap to run. The demo stops the binary itself.
"$EC2Q_VENV/bin/python" scripts/demo.py --endpoint "$EC2Q_TEST_ENDPOINT" \
  --binary "$binary"
