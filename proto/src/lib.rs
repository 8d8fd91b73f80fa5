//! The warmpool.v1 wire types and tonic service stubs, generated at build time
//! from `proto/warmpool/v1/warmpool.proto`.
#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("warmpool.v1");

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("warmpool_descriptor");
}
