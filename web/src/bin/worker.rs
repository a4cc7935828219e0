//! The Web Worker that owns the engine.
fn main() {
    #[cfg(target_arch = "wasm32")]
    scalpel_web::worker::start();
}
