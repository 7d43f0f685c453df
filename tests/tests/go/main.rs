//! The `go` part's end-to-end test: the Go SDK (`sdk/go/e2e`, run with `go test`) against a
//! real keywardd, its certificates checked by openssl and its notation-go signatures by the
//! notation CLI (`go_sdk`). `scripts/test go` runs the Go SDK's own checks first.
//!
//! Run with `scripts/test go`, or `cargo test -p keyward-tests --test go` once the notation CLI
//! and the registry are installed.

mod go_sdk;
