//! Generated code of the `marketing.v1` API, and the encoded descriptor set that server
//! reflection serves (our files plus the `google.rpc` error details clients decode).

pub mod marketing {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("marketing.v1");

        pub use crate::applicable::ApplicableCoupon;
    }
}

pub use marketing::v1;

pub mod applicable;
pub mod raw;

/// Encoded `FileDescriptorSet` of every file of the API and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("marketing_descriptor");
