//! The page: a Leptos app. Never runs model code; talks to the worker.
fn main() {
    #[cfg(target_arch = "wasm32")]
    scalpel_web::app::start();
}
