//! The engine worker's threaded build. `public/worker_loader.js` imports its
//! glue (`worker_threads.js`) as an ES module, starts the kernels' helper
//! threads (`public/worker_helper.js`: each instantiates this module with its
//! shared memory and runs `kernel_helper`), then calls `start_worker`, which
//! is the one-thread worker's `start`. Nothing runs at instantiation.
//! Built by `cargo xtask` (`Ctx::build_threaded_worker`): nightly, std rebuilt
//! with wasm atomics, shared memory.
#[cfg(target_arch = "wasm32")]
pub use scalpel_web::worker::{kernel_helper, kernel_helper_died, kernel_memory, kernel_module, kernel_threads_joined, start_worker};
