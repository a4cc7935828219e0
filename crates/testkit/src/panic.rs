//! Panics as values, so one bad case does not hide the others.

use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}
static INSTALL: std::sync::Once = std::sync::Once::new();

/// A panic hook that, on threads inside `no_panic`, records the message,
/// location and the engine frames of the backtrace instead of printing them.
fn install_hook() {
    INSTALL.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let bt = std::backtrace::Backtrace::force_capture().to_string();
                let frames: Vec<&str> = bt
                    .lines()
                    .filter(|l| l.contains("scalpel_engine") || l.contains("candle") || l.contains("tokenizers"))
                    .take(12)
                    .map(str::trim)
                    .collect();
                let msg = format!("{info}\n  frames: {}", frames.join("\n          "));
                LAST_PANIC.with(|l| *l.borrow_mut() = Some(msg));
            } else {
                prev(info)
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err(message with location and engine
/// frames)` so one bad case does not hide the others.
pub fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.map_err(|_| LAST_PANIC.with(|l| l.borrow_mut().take()).unwrap_or_else(|| "panic".into()))
}
