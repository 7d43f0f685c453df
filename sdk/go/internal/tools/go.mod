// The code generators of sdk/go/generate.sh, pinned here so that the generated code (and
// the check that it matches the .proto) does not depend on what a machine has installed.
module github.com/keyward/keyward/sdk/go/internal/tools

go 1.24.0

tool (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc
	google.golang.org/protobuf/cmd/protoc-gen-go
)

require (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.0 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)
