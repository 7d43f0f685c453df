//! The keyward gRPC API: generated code for the `.proto` files in this crate.
//!
//! `keyward.v1` is the client API (the `Signer` and `KeyAdmin` services);
//! `keyward.plugin.v1` is how the daemon talks to a backend running as its own process.
#![allow(missing_docs, unused_qualifications, missing_debug_implementations)]

/// `keyward.v1`: the client API.
pub mod v1 {
    tonic::include_proto!("keyward.v1");
}

/// `keyward.plugin.v1`: the protocol between keywardd and a backend plugin process.
pub mod plugin {
    /// Version 1 of the plugin protocol.
    pub mod v1 {
        tonic::include_proto!("keyward.plugin.v1");
    }
}

pub mod names;

/// The encoded `FileDescriptorSet` of every `.proto` in this crate, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keyward_descriptor");

/// The encoded `FileDescriptorSet` of the client API (`keyward.v1`) alone: what the agent
/// socket serves, for its reflection service.
pub const CLIENT_API_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("keyward_v1_descriptor");
