//! Compiles `proto/` with the protoc shipped in `protoc-bin-vendored`, so building needs no
//! system protoc, and writes the descriptor set that server reflection serves.

use std::{env, io, path::PathBuf};

fn main() -> io::Result<()> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos: Vec<PathBuf> = [
        "coupon_template",
        "user_coupon",
        "points",
        "tenant_settings",
        "event",
        "admin",
    ]
    .iter()
    .map(|name| proto_root.join(format!("marketing/v1/{name}.proto")))
    .collect();
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(io::Error::other)?);

    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    let well_known = protoc_bin_vendored::include_path().map_err(io::Error::other)?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        // Written by hand, so a server can send coupons it encoded before (src/applicable.rs).
        .extern_path(
            ".marketing.v1.ApplicableCoupon",
            "crate::applicable::ApplicableCoupon",
        )
        .file_descriptor_set_path(out_dir.join("marketing_descriptor.bin"))
        .compile_with_config(config, &protos, &[proto_root.clone(), well_known])?;
    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
