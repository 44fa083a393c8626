#!/usr/bin/env bash
# Cross-builds flor for each board in boards/, checks what `file` says about it,
# runs it under qemu-user, runs the vertex smoke test with emulated flor
# processes, and checks every board's size against its budget.
#
#   ci/cross.sh [board...]         all boards when none is named
#   ci/cross.sh --docker [board]   build the cross images without a registry
#                                  (debootstrap -> docker import -> cross/Dockerfile*),
#                                  then `cross build` (cross-rs) of the board inside its
#                                  image, checked byte for byte against the native
#                                  build (default board: openwrt-mipsel)
#   ci/cross.sh --pic [board...]   also build rustc's default (PIC) relocation model
#                                  and report whether it runs (the static-PIE trap)
#
# Heavy work runs under `nice -n 19` with 2 jobs: the machines are shared.
# Timings go to stdout as "time: <what> <seconds>s".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

docker_mode=0
pic_check=0
boards=()
for a in "$@"; do
  case "$a" in
    --docker) docker_mode=1 ;;
    --pic) pic_check=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "ci/cross.sh: unknown option $a" >&2; exit 2 ;;
    *) boards+=("$a") ;;
  esac
done

JOBS=${FLOR_CROSS_JOBS:-2}
# cross-rs's release on crates.io (the git main branch is not reachable here).
CROSS_RS_VERSION=0.2.5
step() { printf '\n== %s\n' "$*"; }
fail() { echo "ci/cross.sh: FAIL: $*" >&2; exit 1; }
now() { date +%s; }
timed() { # <label> <command...>: runs it and prints how long it took
  local label=$1 t0; shift
  t0=$(now)
  "$@"
  echo "time: $label $(( $(now) - t0 ))s"
}

# ------------------------------------------------------------- both modes
step "toolchain (cross/setup.sh: Debian rustc-web, zig, cross gcc, qemu-user)"
timed setup cross/setup.sh
# size-report is a host tool: build it with the cargo already on PATH (rustup's
# on a workstation) before the cross toolchain takes over.
timed size-report-tool cargo build -q --locked -p size-report
SR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/size-report"
HOST_PATH=$PATH
# shellcheck source=cross/env.sh
source cross/env.sh

# Sets the BOARD_* variables of a board (size-report env), or fails naming it.
board_env() { # <board>
  local e
  e=$("$SR" env "$1") || fail "no board $1 (size-report list names them)"
  eval "$e"
}

# Runs the board's flor under qemu-user with the board's CPU and libc prefix.
qemu_flor() { # <bin> args...
  local bin=$1; shift
  env QEMU_CPU="$BOARD_QEMU_CPU" ${BOARD_QEMU_LD_PREFIX:+QEMU_LD_PREFIX="$BOARD_QEMU_LD_PREFIX"} \
    "$BOARD_QEMU" "$bin" "$@"
}

# Checks `file` output against the board's expectations.
check_file() { # <bin>
  local out
  out=$(file -b "$1")
  echo "file: $out"
  for want in "${BOARD_FILE_EXPECT[@]}"; do
    case "$out" in *"$want"*) ;; *) fail "$b: file does not say '$want'" ;; esac
  done
  if [ "$BOARD_LINK" = static ]; then
    case "$out" in *interpreter*|*"dynamically linked"*) fail "$b: expected a static binary" ;; esac
  fi
}

# What flor does today without a rete: version, help, a refused flag.
basic_smoke() { # <bin>
  local bin=$1 out rc
  out=$(qemu_flor "$bin" --version) || fail "$b: flor --version exited $?"
  [ "$out" = "flor $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] || fail "$b: --version printed '$out'"
  echo "qemu: $out"
  qemu_flor "$bin" --help >/dev/null || fail "$b: flor --help failed"
  set +e
  out=$(qemu_flor "$bin" --no-such-flag 2>&1); rc=$?
  set -e
  # A clean refusal (argh exits 1 with a message), not a crash (signal: rc > 128).
  [ "$rc" = 1 ] && [ -n "$out" ] || fail "$b: bad flag gave rc=$rc: $out"
  echo "qemu: bad flag refused cleanly (rc=1)"
}

# ---------------------------------------------------------------- docker mode
if [ "$docker_mode" = 1 ]; then
  [ "${#boards[@]}" -gt 0 ] || boards=(openwrt-mipsel)
  docker info >/dev/null 2>&1 || fail "--docker needs a running Docker engine (docker info failed)"
  # shellcheck source=ci/debian-image.sh
  source ci/debian-image.sh
  step "base image $DEBIAN_BASE_IMAGE (no registry: debootstrap + docker import)"
  debian_base_image

  step "toolchain image florete/cross-base (cross/Dockerfile runs cross/setup.sh)"
  # Where this network intercepts TLS, the image must trust the same CA as the host.
  mkdir -p cross/ca-certificates
  find cross/ca-certificates -name '*.crt' -delete
  cp /usr/local/share/ca-certificates/*.crt cross/ca-certificates/ 2>/dev/null || true
  timed image-cross-base nice -n 19 docker build -q -t florete/cross-base:bookworm -f cross/Dockerfile cross/

  # The board images only add environment; cross/Dockerfile.<target> are
  # generated from boards/*.toml (size-report dockerfile; a unit test keeps them
  # equal). Only the named boards' images: each ENV layer is a commit (~35 s here).
  step "per-board images florete/cross:<target> (cross/Dockerfile.<target>)"
  for b in "${boards[@]}"; do
    board_env "$b"
    [ -n "$BOARD_QEMU" ] || fail "$b: --docker builds the Linux boards (cross-rs images carry a qemu runner); $b has none"
    [ -f "cross/Dockerfile.$BOARD_TARGET" ] || fail "no cross/Dockerfile.$BOARD_TARGET for board $b"
    timed "image-$BOARD_TARGET" docker build -q -t "florete/cross:$BOARD_TARGET" -f "cross/Dockerfile.$BOARD_TARGET" cross/
  done

  # cross-rs from crates.io, driving the images through Cross.toml. rustup here
  # cannot download a toolchain or rust-src, so cross gets Debian's own (the one
  # in the images and in the native build): `rustup toolchain link` of
  # $FLOR_CROSS_HOME/toolchain (cross/setup.sh), and CROSS_CUSTOM_TOOLCHAIN=1 so
  # cross does not try to `rustup component add rust-src` for it. cross 0.2.5
  # names the toolchain it mounts "<+channel>-<host triple>" while rustup resolves
  # a linked toolchain only by its exact name, so the one directory is linked
  # under both names.
  step "cross-rs $CROSS_RS_VERSION with Debian's toolchain (rustup toolchain link)"
  command -v rustup >/dev/null || fail "cross-rs needs rustup on the host (https://rustup.rs); none on PATH"
  if [ "$(PATH=$HOST_PATH cross --version 2>/dev/null | head -1)" != "cross $CROSS_RS_VERSION" ]; then
    # With the host's own toolchain, not env.sh's Debian rustc.
    timed install-cross-rs env -u RUSTC -u RUSTDOC -u RUSTC_BOOTSTRAP PATH="$HOST_PATH" \
      nice -n 19 cargo install -q --locked cross --version "$CROSS_RS_VERSION"
  fi
  host_triple=$(PATH=$HOST_PATH rustc -vV | sed -n 's/^host: //p')
  for name in florete-debian "florete-debian-$host_triple"; do
    rustup toolchain link "$name" "$FLOR_CROSS_HOME/toolchain"
  done
  echo "toolchain: $(PATH=$HOST_PATH rustc +florete-debian --version)"

  for b in "${boards[@]}"; do
    board_env "$b"
    step "$b: cross build inside florete/cross:$BOARD_TARGET (cold: its own target dir)"
    rm -rf target/cross-rs
    # The native build's environment (size-report build): no stripping by the
    # linker (we strip the same way below), no debug info.
    timed "cross-rs-$b" env PATH="$HOST_PATH" RUSTC_BOOTSTRAP=1 CROSS_CUSTOM_TOOLCHAIN=1 \
      CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=false \
      nice -n 19 cross +florete-debian "${BOARD_CARGO_ARGS[@]}" --target-dir "$ROOT/target/cross-rs" -j "$JOBS"
    out=target/boards/$b/cross-rs
    mkdir -p "$out"
    "$SR" strip "target/cross-rs/$BOARD_TARGET/release/flor" "$out/flor"
    echo "built: $out/flor ($(stat -c %s "$out/flor") bytes)"
    check_file "$out/flor"
    basic_smoke "$out/flor"
    # The native build of the same sources (incremental: a no-op right after
    # ci/cross.sh built the board, as in CI).
    step "$b: native build to compare with"
    native=$(nice -n 19 "$SR" --jobs "$JOBS" build "$b" 2>/dev/null) || fail "$b: native build failed"
    a=$(sha256sum <"$out/flor" | cut -d' ' -f1)
    n=$(sha256sum <"$native" | cut -d' ' -f1)
    echo "sha256: cross-rs $a"
    echo "sha256: native   $n"
    [ "$a" = "$n" ] || fail "$b: the cross-rs build differs from the native build ($(stat -c %s "$out/flor") vs $(stat -c %s "$native") bytes; cmp: $(cmp "$out/flor" "$native" | head -1))"
    echo "$b: cross-rs in florete/cross:$BOARD_TARGET and the native build are the same bytes"
  done
  exit 0
fi

# --------------------------------------------------------------- native mode
[ "${#boards[@]}" -gt 0 ] || mapfile -t boards < <("$SR" list)

# The end-to-end smoke test: the vertex process tests in agent/tests/vertex_flows.rs,
# with both `flor vertex run` processes (server node beta, client node laptop)
# running the cross-built flor under qemu: curl -> SOCKS5 (emulated laptop) ->
# QUIC mTLS -> emulated beta -> TCP -> python http.server, and a denied caller.
# The fixtures (rete CA, SVIDs, signed artifacts) are the agent tests' own;
# FLOR_TEST_EXE/FLOR_TEST_RUNNER make them start this binary under qemu.
VERTEX_TESTS=(allowed_user_fetches_a_page_with_curl user_without_the_role_is_not_allowed_and_nothing_reaches_upstream)
vertex_smoke() { # <bin> [log name]
  local bin=$1 log="$ROOT/target/boards/$b/${2:-vertex-smoke}.log" runner
  runner="env QEMU_CPU=$BOARD_QEMU_CPU${BOARD_QEMU_LD_PREFIX:+ QEMU_LD_PREFIX=$BOARD_QEMU_LD_PREFIX} $BOARD_QEMU"
  # The host test harness is built with the host toolchain (not the cross env),
  # with the same feature set as ci/test.sh's `cargo test --workspace` so CI reuses its build.
  ( PATH=$HOST_PATH; unset RUSTC RUSTDOC RUSTC_BOOTSTRAP
    FLOR_TEST_EXE=$bin FLOR_TEST_RUNNER=$runner \
      nice -n 19 cargo test -q --locked --workspace --test vertex_flows -- --exact "${VERTEX_TESTS[@]}" 2>&1 ) \
    | tee "$log" | grep -E '^test |test result|panicked|FAILED' || true
  grep -q "test result: ok. ${#VERTEX_TESTS[@]} passed" "$log" \
    || fail "$b: vertex smoke test failed ($log)"
}

declare -A results
for b in "${boards[@]}"; do
  board_env "$b"
  step "$b: build flor for $BOARD_TARGET"
  t0=$(now)
  bin=$(nice -n 19 "$SR" --jobs "$JOBS" build "$b" 2> >(grep -E '^size-report:|^error|^warning: unused' >&2)) \
    || fail "$b: build failed"
  echo "time: build-$b $(( $(now) - t0 ))s"
  echo "built: $bin ($(stat -c %s "$bin") bytes)"
  check_file "$bin"
  if [ -z "$BOARD_QEMU" ]; then
    # A board with no [qemu] (macOS): built, checked with `file`, measured.
    echo "no run test: nothing here emulates $BOARD_TARGET"
    results[$b]="ok (built, file, size; no run test: nothing here emulates $BOARD_TARGET)"
    continue
  fi
  basic_smoke "$bin"
  step "$b: vertex smoke under $BOARD_QEMU (-cpu $BOARD_QEMU_CPU)"
  timed "vertex-smoke-$b" vertex_smoke "$bin"
  results[$b]="ok"
  # Only boards that pin -Crelocation-model=static have a different PIC build.
  if [ "$pic_check" = 1 ] && ! "$SR" env "$b" | grep -q 'relocation-model=static'; then
    results[$b]="ok; pic: same as release (the board keeps rustc's default relocation model)"
  elif [ "$pic_check" = 1 ]; then
    step "$b: PIC variant (rustc's default relocation model), for the static-PIE note"
    pic=$(nice -n 19 "$SR" --jobs "$JOBS" build --variant pic "$b" 2>/dev/null) || fail "$b: pic build failed"
    echo "file: $(file -b "$pic")"
    set +e
    qemu_flor "$pic" --version; rc=$?
    ( vertex_smoke "$pic" vertex-smoke-pic ) ; vrc=$?
    set -e
    results[$b]="ok; pic: --version rc=$rc, vertex smoke rc=$vrc"
  fi
done

step "size check (size-report)"
timed size-report "$SR" report --no-build "${boards[@]}"

step "summary"
for b in "${boards[@]}"; do echo "$b: ${results[$b]}"; done
