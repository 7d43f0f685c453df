# Shared helpers for scripts/*. Source it; do not run it.

# Keep build output outside the clone so repeated runs on one machine are fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keyward/target}"
# User errors must never print Rust backtraces; tests assert on clean stderr.
export RUST_BACKTRACE="${KEYWARD_RUST_BACKTRACE:-0}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $* (install sudo or run as root)"; fi
}

# apt_install PKG... : installs the Debian packages that are missing, nothing else.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Build dependencies of the workspace (OpenSSL headers for the openssl crate, a C toolchain).
BUILD_PACKAGES=(build-essential pkg-config libssl-dev openssl ca-certificates)

need_cargo() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
}
