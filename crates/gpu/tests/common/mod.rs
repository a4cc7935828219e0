//! The GPU's own test helpers: the device (or a skip) and byte helpers.
//! Fixtures (PRNG, tiny models, the default model) come from scalpel-testkit.
#![allow(dead_code)]

pub use scalpel_testkit::*;

use std::sync::{Arc, OnceLock};

use scalpel_gpu::{block_on, Gpu, GpuOptions};

/// The shared test device (software adapters allowed). `None` means skip,
/// unless SCALPEL_REQUIRE_GPU=1, which turns a missing adapter into a failure.
pub fn gpu() -> Option<Arc<Gpu>> {
    static GPU: OnceLock<Option<Arc<Gpu>>> = OnceLock::new();
    GPU.get_or_init(|| match block_on(Gpu::new(&GpuOptions::allow_software())) {
        Ok(g) => {
            eprintln!("GPU: {} ({}, {}, software: {}, shader-f16: {}, subgroups: {})",
                g.info.name, g.info.backend, g.info.device_type, g.info.software, g.info.shader_f16, g.info.subgroups);
            Some(Arc::new(g))
        }
        Err(e) => {
            if std::env::var("SCALPEL_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("SCALPEL_REQUIRE_GPU=1 but {e}");
            }
            eprintln!("SKIP: {e} (install mesa-vulkan-drivers for lavapipe; SCALPEL_REQUIRE_GPU=1 makes this a failure)");
            None
        }
    })
    .clone()
}

/// Max |a - b| over two equal-length slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn bytes(xs: &[f32]) -> Vec<u8> {
    bytemuck_free(xs)
}
fn bytemuck_free(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn u32_bytes(xs: &[u32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
pub fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The default model's bytes (see `scalpel_testkit::default_model_bytes`).
pub fn default_model() -> Option<Vec<u8>> {
    default_model_bytes()
}
