//! The `clients` part: stock gRPC clients of other stacks (Python grpcio, grpc-go, grpcurl,
//! @grpc/grpc-js, grpc-java) against a real keywardd, each with its default options
//! (`clients`).
//!
//! Run with `scripts/test clients` (installs and builds the clients), or
//! `cargo test -p keyward-tests --test clients` once they are installed.

mod clients;
