//! What rendering a chat template leaves allocated: nothing. A template can
//! make reference cycles through minijinja's namespaces (`{% set ns.me = ns
//! %}`), which reference counting alone never frees; the fuzzer found one
//! (fuzz/regressions/chat_template/). Its own test binary, so the counting
//! allocator sees no other test's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use scalpel_engine::Tokenizer;

/// Bytes allocated and not yet freed, by anyone in this process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn namespace_cycles_do_not_outlive_the_render() {
    let mut tok = Tokenizer::from_hf_json("tokenizer.json", &scalpel_testkit::tokenizer_json(), None).unwrap();
    // Each holds a 1 MB string in a namespace that refers to itself, directly,
    // through a list, through a dict, or through a second namespace.
    let templates = [
        "{% set ns = namespace(big='x' * 1000000) %}{% set ns.me = ns %}{{ messages[0].content }}",
        "{% set ns = namespace() %}{% set ns.big = 'x' * 1000000 %}{% set ns.all = [ns, 1] %}ok",
        "{% set ns = namespace(big='x' * 1000000) %}{% set ns.d = {'k': ns} %}{{ raise_exception('no') }}",
        "{% set a = namespace(big='x' * 1000000) %}{% set b = namespace(a=a) %}{% set a.b = b %}ok",
    ];
    let render = |tok: &Tokenizer| {
        let _ = tok.apply_chat_template(&[("user", "hi")], true);
    };
    for t in templates {
        tok.chat_template = Some(t.to_owned());
        // Once first, so lazily built statics are not counted.
        render(&tok);
        let before = LIVE.load(Ordering::Relaxed);
        for _ in 0..5 {
            render(&tok);
        }
        let kept = LIVE.load(Ordering::Relaxed) - before;
        assert!(kept < 100_000, "five renders of {t:?} left {kept} bytes allocated");
    }
}
