# Sourced by the scripts: one shared target directory outside the clone,
# so the README's commands, the tests and CI reuse one build of RocksDB.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/shoal-target}"
export SHOAL_BIN="$CARGO_TARGET_DIR/release"
# Every script builds the same way: release, all targets, so `cargo test
# --release` afterwards reuses the exact same dependency builds.
shoal_build() {
  cargo build --release --workspace --all-targets
}
