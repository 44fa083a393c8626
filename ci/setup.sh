# Sourced by the ci/ scripts: installs what tests need, idempotently (Debian
# packages for the real clients tests drive: curl through SOCKS5, chromium, ...).
# shellcheck shell=bash

# ensure_commands <command>:<debian package> ...: apt-get installs the packages
# of the commands that are missing (root), or says which are missing.
ensure_commands() {
  local want pkgs=()
  for want in "$@"; do
    command -v "${want%%:*}" >/dev/null 2>&1 || pkgs+=("${want#*:}")
  done
  [ "${#pkgs[@]}" -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
  else
    echo "missing packages: ${pkgs[*]} (install them or run as root)" >&2
    exit 1
  fi
}
# Headless Chromium renders `retectl landing`'s page (retectl/tests/landing.rs);
# a real Prometheus scrapes `flor metrics-server` (retectl/tests/metrics.rs);
# flor's and retectl's completions run in zsh and fish, the man pages in groff
# (agent/tests/cli.rs, retectl/tests/cli.rs).
ensure_commands curl:curl ip:iproute2 python3:python3 chromium:chromium prometheus:prometheus \
  zsh:zsh fish:fish groff:groff-base
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
