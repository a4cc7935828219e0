//! The engine's thread count: a preference of this browser (localStorage),
//! not part of any link. More than one needs the threaded build, which needs
//! a cross-origin isolated page (`worker_loader.js` decides).

use gloo_storage::{LocalStorage, Storage};

const KEY: &str = "scalpel.threads";

/// The machine's logical cores, as the browser reports them.
pub fn cores() -> u32 {
    web_sys::window().map(|w| w.navigator().hardware_concurrency() as u32).unwrap_or(1).max(1)
}

/// The choices offered: 1 up to the cores (at least 2, so the threaded build
/// can be tried anywhere), at most 16.
pub fn max() -> u32 {
    cores().clamp(2, 16)
}

/// One core is left to the page: cores − 1, at least 1, at most 8.
pub fn default() -> u32 {
    (cores() - 1).clamp(1, 8)
}

/// The saved choice if it is one of today's choices, else the default.
pub fn saved_or_default() -> u32 {
    LocalStorage::raw()
        .get_item(KEY)
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|n| (1..=max()).contains(n))
        .unwrap_or_else(default)
}

pub fn save(n: u32) {
    // Private windows and full storage refuse: the choice holds for this visit.
    let _ = LocalStorage::raw().set_item(KEY, &n.to_string());
}
