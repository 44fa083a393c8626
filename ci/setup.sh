# Sourced by the ci/ scripts: installs what tests need, idempotently.
# Debian packages for real clients used by tests (curl for SOCKS5 requests,
# chromium for the landing page).
need_pkgs=()
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
# Headless Chromium renders `retectl landing`'s page (retectl/tests/landing.rs).
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
# A real Prometheus scrapes `flor metrics-server` (retectl/tests/metrics.rs).
command -v prometheus >/dev/null 2>&1 || need_pkgs+=(prometheus)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
  else
    echo "missing packages: ${need_pkgs[*]} (install them or run as root)" >&2
    exit 1
  fi
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
