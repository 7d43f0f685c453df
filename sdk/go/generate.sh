#!/usr/bin/env bash
# Regenerates the Go gRPC client (keywardv1/) from proto/keyward/v1/keyward.proto.
#
#   sdk/go/generate.sh            rewrite keywardv1/*.pb.go in place
#   sdk/go/generate.sh --check    regenerate into a temp dir and fail if the checked-in code
#                                 differs (scripts/test go runs this)
#
# Needs protoc (Debian protobuf-compiler, 3.21.12 on Debian 12: its version is written into
# the generated files) and Go; protoc-gen-go and protoc-gen-go-grpc are built at the versions
# pinned in internal/tools/go.mod.
set -euo pipefail
cd "$(dirname "$0")"
command -v protoc >/dev/null || { echo "error: protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

check=no
[ "${1:-}" = --check ] && check=yes

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd internal/tools && go build -o "$work/bin/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc)

module=github.com/keyward/keyward/sdk/go
mapping=keyward/v1/keyward.proto=$module/keywardv1
mkdir -p "$work/out"
protoc -I ../../proto \
  --plugin=protoc-gen-go="$work/bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$work/bin/protoc-gen-go-grpc" \
  --go_out="$work/out" --go_opt=module=$module --go_opt=M$mapping \
  --go-grpc_out="$work/out" --go-grpc_opt=module=$module --go-grpc_opt=M$mapping \
  keyward/v1/keyward.proto

if [ $check = yes ]; then
  if ! diff -ru keywardv1 "$work/out/keywardv1"; then
    echo "error: sdk/go/keywardv1 does not match proto/keyward/v1/keyward.proto: run sdk/go/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "sdk/go/keywardv1 matches proto/keyward/v1/keyward.proto"
else
  rm -rf keywardv1
  cp -r "$work/out/keywardv1" keywardv1
  echo "regenerated sdk/go/keywardv1"
fi
