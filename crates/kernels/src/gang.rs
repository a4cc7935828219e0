//! The threaded wasm build's workers for the kernels (`threads` feature,
//! wasm32 with atomics): the calling thread and the helpers that have
//! joined ([`helper_loop`], each on its own Web Worker sharing the module's
//! memory) take the pieces of one product in turn.
//!
//! Why not rayon's pool (wasm-bindgen-rayon): a decode step is about 200
//! products of 0.1–1 ms, and rayon's idle threads sleep in `Atomics.wait`
//! and its caller parks while the pool works; with it, 2 threads gave
//! 1.0–1.2× on f32 decode in Chromium on 2 cores. Here the caller works on
//! pieces itself and helpers spin for a few milliseconds after each product
//! before they sleep, so during decoding and prefill they are awake for the
//! next one.
//!
//! One product runs at a time: a call made while one is running (or from a
//! helper) runs its pieces on the calling thread. Which thread computes a
//! piece does not change its operations, so results are bit-identical.

use core::arch::wasm32::{memory_atomic_notify, memory_atomic_wait32};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering::SeqCst};

/// One product's pieces.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    pieces: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

/// Helpers that have joined.
static HELPERS: AtomicUsize = AtomicUsize::new(0);
/// Bumped for each product; helpers wait on it.
static EPOCH: AtomicU32 = AtomicU32::new(0);
/// The running product (null between products).
static CURRENT: AtomicPtr<Job<'static>> = AtomicPtr::new(core::ptr::null_mut());
/// Helpers between reading `CURRENT` and being done with that job.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Helpers asleep in `memory.atomic.wait32`.
static SLEEPERS: AtomicUsize = AtomicUsize::new(0);
/// A product is running.
static BUSY: AtomicBool = AtomicBool::new(false);
/// A helper trapped ([`helper_died`]): a piece it held never finishes.
static DIED: AtomicBool = AtomicBool::new(false);
/// The caller runs everything alone ([`alone`]).
static ALONE: AtomicBool = AtomicBool::new(false);

/// Checks of `EPOCH` a helper spins before it sleeps: a few milliseconds,
/// longer than the gap between two products of a forward pass.
const SPINS: u32 = 1 << 21;

/// Threads a product is split over: the caller and the helpers.
pub fn threads() -> usize {
    if ALONE.load(SeqCst) {
        return 1;
    }
    HELPERS.load(SeqCst) + 1
}

/// Runs `f` with every product's pieces on the caller alone ([`threads`]
/// is 1 inside), as the one-thread build would; the helpers stay joined,
/// idle (spinning, then asleep). Restores the previous setting when `f` returns.
pub fn alone<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ALONE.store(self.0, SeqCst);
        }
    }
    let _restore = Restore(ALONE.swap(true, SeqCst));
    f()
}

fn work(job: &Job) {
    loop {
        let i = job.next.fetch_add(1, SeqCst);
        if i >= job.pieces {
            return;
        }
        (job.f)(i);
        job.done.fetch_add(1, SeqCst);
    }
}

/// Runs `f(0) .. f(pieces - 1)`, each once, over the caller and the helpers;
/// returns when all have returned.
pub fn run(pieces: usize, f: &(dyn Fn(usize) + Sync)) {
    if pieces < 2 || threads() < 2 || BUSY.swap(true, SeqCst) {
        (0..pieces).for_each(f);
        return;
    }
    let job = Job { f, pieces, next: AtomicUsize::new(0), done: AtomicUsize::new(0) };
    // SAFETY of the lifetime: `job` outlives every use of the pointer. Helpers
    // read it only while counted in ACTIVE; it is cleared, and ACTIVE drained,
    // before this function returns.
    CURRENT.store(&job as *const Job as *mut Job<'static>, SeqCst);
    EPOCH.fetch_add(1, SeqCst);
    if SLEEPERS.load(SeqCst) > 0 {
        // SAFETY: EPOCH is a live, aligned 32-bit atomic in the shared memory.
        unsafe { memory_atomic_notify(EPOCH.as_ptr() as *mut i32, u32::MAX) };
    }
    work(&job);
    while job.done.load(SeqCst) < pieces {
        check_helpers();
        core::hint::spin_loop();
    }
    CURRENT.store(core::ptr::null_mut(), SeqCst);
    while ACTIVE.load(SeqCst) > 0 {
        check_helpers();
        core::hint::spin_loop();
    }
    BUSY.store(false, SeqCst);
}

/// Records that a helper trapped (a panic, or running out of memory, inside
/// a piece): `public/worker_helper.js` calls it when the helper's loop
/// throws. The helper's thread is gone, and a piece it had taken would
/// never be done.
pub fn helper_died() {
    DIED.store(true, SeqCst);
}

/// Panics if a helper died: a caller waiting for its piece would otherwise
/// spin for good, and the page's Stop could not reach it (the worker reads
/// the stop flag between steps, never inside a product). The panic ends
/// the engine worker, and the page restarts it as after any crash, with
/// fresh helpers.
fn check_helpers() {
    if DIED.load(SeqCst) {
        panic!("a kernel helper thread stopped with an error in the middle of a product");
    }
}

/// A helper's life: wait for a product, take pieces, repeat. Never returns.
/// Called on a Web Worker that instantiated the module with the shared memory.
pub fn helper_loop() -> ! {
    HELPERS.fetch_add(1, SeqCst);
    let mut seen = EPOCH.load(SeqCst);
    loop {
        let mut spins = 0u32;
        loop {
            let e = EPOCH.load(SeqCst);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if spins < SPINS {
                core::hint::spin_loop();
                continue;
            }
            SLEEPERS.fetch_add(1, SeqCst);
            if EPOCH.load(SeqCst) == seen {
                // SAFETY: as above; returns when woken or if EPOCH moved on.
                unsafe { memory_atomic_wait32(EPOCH.as_ptr() as *mut i32, seen as i32, -1) };
            }
            SLEEPERS.fetch_sub(1, SeqCst);
            spins = 0;
        }
        ACTIVE.fetch_add(1, SeqCst);
        let job = CURRENT.load(SeqCst);
        if !job.is_null() {
            // SAFETY: non-null while its caller waits for ACTIVE to drain.
            work(unsafe { &*job });
        }
        ACTIVE.fetch_sub(1, SeqCst);
    }
}
