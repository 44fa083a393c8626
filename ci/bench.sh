#!/usr/bin/env bash
# Data-plane measurements (not a test): Florete vs direct TCP in the same run,
# release build, real flor processes on loopback. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/setup.sh
source ci/setup.sh
# 1,000 held flows need ~4,000 descriptors across the bench and both vertices.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo bench -p flor --bench dataplane
