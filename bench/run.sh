#!/usr/bin/env bash
# The benchmark (benches/containment.rs) against the emulator: figures in bench/results.md and
# bench/results.json. Built in the dev profile, which the tests have already built: the figures
# are round trips of injected latency, which the optimiser does not change.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
scripts/venv.sh
. scripts/emulator.sh
cargo bench --locked --profile dev --bench containment
