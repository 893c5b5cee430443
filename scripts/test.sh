#!/usr/bin/env bash
# Runs every test: unit, property, and end-to-end (real rclone S3 server,
# real cache-node processes, real RocksDB). Needs root only for FUSE tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
shoal_build
cargo test --release --workspace -- --test-threads="${SHOAL_TEST_THREADS:-2}"
