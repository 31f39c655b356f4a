#!/usr/bin/env bash
# Builds the Lambda package as `sam build` does (cargo lambda, release, arm64). Slow: run it
# before a deploy, not on every change.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
venv="${EC2Q_BUILD_VENV:-$(dirname "$EC2Q_VENV")/build-venv}"
if [ ! -x "$venv/bin/cargo-lambda" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r requirements/build.txt
fi
rustup target add aarch64-unknown-linux-gnu
# cargo-lambda cross-compiles with Zig, which it finds as the ziglang package's python-zig in
# the same virtualenv: only when that virtualenv is on PATH.
PATH="$venv/bin:$PATH" "$venv/bin/cargo-lambda" lambda build --release --arm64 --bin ec2-quarantine --output-format zip
ls -l "$CARGO_TARGET_DIR/lambda/ec2-quarantine/"
