#!/usr/bin/env bash
# Cold start, peak memory and package size of one build (bench/footprint.py), against the
# emulator:  bench/footprint.sh [BINARY]  (default: the debug binary the tests build).
# For the release figures: bench/footprint.sh "$CARGO_TARGET_DIR/release/ec2-quarantine" after
# `cargo build --release`; the arm64 package from `make release` cannot run on an x86 machine,
# so only its size is read (README "Performance").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
scripts/venv.sh
if [ $# -ge 1 ]; then
  binary=$1
else
  cargo build --locked --bin ec2-quarantine
  binary=$(copy_binary)
fi
. scripts/emulator.sh
"$EC2Q_VENV/bin/python" bench/footprint.py --endpoint "$EC2Q_TEST_ENDPOINT" --binary "$binary"
