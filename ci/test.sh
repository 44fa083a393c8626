#!/usr/bin/env bash
# The one command that runs every test: formatting, lints, unit and
# integration tests (real flor processes on loopback). .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=ci/setup.sh
source ci/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "flor-vertex carries no YAML and no serde_json"
if cargo tree -p flor-vertex -e normal --prefix none | grep -E '^(serde_json|serde_yaml|serde_yml|serde-saphyr|saphyr|yaml-rust)' ; then
  echo "flor-vertex must not depend on YAML or serde_json (device build)" >&2
  exit 1
fi

step "fuzz targets compile (fuzz/, one per parser of outside input)"
cargo build --manifest-path fuzz/Cargo.toml --locked

step "fuzz: every target for 20 s from fuzz/corpus with ASan (ci/fuzz.sh)"
ci/fuzz.sh

step "flor without the management roles (router boards: --no-default-features)"
cargo clippy -p flor --no-default-features --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "end to end: docs/playbook.md on four hosts in network namespaces (ci/e2e.sh)"
ci/e2e.sh

step "the main job: ci/demo.sh (a local rete on loopback carrying real traffic)"
ci/demo.sh

if [ -x ci/extra-tests.sh ]; then
  step "extra tests"
  ci/extra-tests.sh
fi

# ---- cross (issues 7 and 17) ---------------------------------------------
# Every board in boards/ end to end: Debian rustc-web + build-std (zig for the
# static musl routers, Debian's cross gcc for the Raspberry Pis), `file` check,
# qemu-user run, the vertex smoke test with both vertices emulated (curl ->
# SOCKS5 -> QUIC mTLS -> TCP), and size-report against each board's budget
# (fails when one is over). Installs its toolchain with cross/setup.sh on first
# run. Times per board: size-report/README.md.
step "cross: every board built, qemu smoke test, size check (ci/cross.sh)"
ci/cross.sh

# The cross/ images for real (issue 17): the Debian base from debootstrap, the
# toolchain image from the same cross/setup.sh, then `cross build` (cross-rs from
# crates.io, Debian's toolchain linked into rustup) of openwrt-mipsel inside
# florete/cross:mipsel-unknown-linux-musl; its binary must be byte for byte the
# one the native step above built. Images are kept for the next run.
step "cross-rs: openwrt-mipsel built inside its cross/ image, same bytes as native (ci/cross.sh --docker)"
ci/cross.sh --docker openwrt-mipsel

# ---- packaging (issue 6) --------------------------------------------------
# install.sh in scratch roots (systemd unit verified, launchd plist parsed), and
# the OpenWrt .ipk built from the mipsel binary ci/cross.sh just built: control
# fields, files and modes, `file` and a qemu run, the procd init script; and the
# Windows MSI around a cross-built flor.exe: its tables, then under Wine the
# install, the Florete service, the installed flor.exe as a node of a real rete
# carrying traffic, and the uninstall.
step "packaging: install.sh, OpenWrt .ipk, Windows MSI (ci/packaging-test.sh)"
ci/packaging-test.sh
