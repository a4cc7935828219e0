//! Issue 11, defect 6: a prompt's length must not decide, unchecked, how
//! much memory a pass takes. The estimate a pass is checked against
//! (`Model::pass_bytes`) is compared here with the peak the allocator
//! really sees, and a pass over the budget is refused before it allocates.
//!
//! One test: the counting allocator is global to this binary, and a second
//! test running at the same time would add its allocations to the peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use scalpel_engine::{KvCache, Logits, Model, ModelSource, PassSize, Precision};
use scalpel_testkit::*;

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = NOW.fetch_add(l.size(), SeqCst) + l.size();
            PEAK.fetch_max(now, SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        NOW.fetch_sub(l.size(), SeqCst);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new > l.size() {
                let now = NOW.fetch_add(new - l.size(), SeqCst) + new - l.size();
                PEAK.fetch_max(now, SeqCst);
            } else {
                NOW.fetch_sub(l.size() - new, SeqCst);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = NOW.load(SeqCst);
    PEAK.store(before, SeqCst);
    let out = f();
    (out, PEAK.load(SeqCst) - before)
}

#[test]
fn a_pass_is_checked_against_a_budget_that_bounds_its_real_peak() {
    let spec = LlamaSpec { n_ctx: 1024, ..Default::default() };
    let mut m = Model::load("tiny.gguf", ModelSource::Gguf(&tiny_llama(&spec).bytes()), Precision::F32).unwrap();
    let ids: Vec<u32> = (0..600).map(|i| (i * 7 % 250) as u32 + 3).collect();
    let t = ids.len();
    let input = m.ids_tensor(&ids).unwrap();

    // The estimate is an upper bound of the real peak, and not a loose one.
    let shapes = [
        ("all logits, no cache", Logits::All, false),
        ("last logits, a cache", Logits::Last, true),
        ("logits from position 500", Logits::From(500), false),
    ];
    for (what, logits, cached) in shapes {
        let estimate = m.pass_bytes(PassSize::prompt(t, logits, cached)) as usize;
        let mut cache = KvCache::new(&m.config);
        let (out, peak) = peak_of(|| m.forward(&input, cached.then_some(&mut cache), None, logits).unwrap());
        assert_eq!(out.dims(), &[1, logits.rows(t), VOCAB], "{what}");
        println!("{what}: real peak {peak} bytes, estimate {estimate} ({:.2}×)", estimate as f64 / peak as f64);
        assert!(peak <= estimate, "{what}: the pass took {peak} bytes at its peak, more than the estimate {estimate}");
        assert!(estimate <= 3 * peak, "{what}: the estimate {estimate} is over 3× the real peak {peak}");
    }

    // Rows from a position are the rows of all logits from there.
    let all: Vec<Vec<f32>> = m.forward(&input, None, None, Logits::All).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
    let from: Vec<Vec<f32>> = m.forward(&input, None, None, Logits::From(590)).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
    assert_eq!(from.len(), 10);
    for (a, b) in all[590..].iter().zip(&from) {
        let gap = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(gap <= 1e-5, "logits from position 590 differ from all logits by {gap}");
    }
    let msg = m.forward(&input, None, None, Logits::From(t)).unwrap_err().to_string();
    assert!(msg.contains("logits from position 600 asked of a pass over 600 positions"), "{msg}");

    // Under a budget: the longest prompt that fits runs, one more token is
    // refused before it allocates, with the estimate, the limit and the fit.
    let budget = m.pass_bytes(PassSize::prompt(t, Logits::Last, false));
    m.set_activation_budget(Some(budget));
    assert_eq!(m.max_tokens(Logits::Last, false), t, "the budget of exactly {t} tokens");
    m.forward(&input, None, None, Logits::Last).expect("the prompt at the budget runs");
    let longer: Vec<u32> = ids.iter().chain(&[5]).copied().collect();
    let longer = m.ids_tensor(&longer).unwrap();
    let (err, peak) = peak_of(|| m.forward(&longer, None, None, Logits::Last).unwrap_err().to_string());
    let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
    let need = m.pass_bytes(PassSize::prompt(t + 1, Logits::Last, false));
    assert!(
        err.contains(&format!(
            "a forward pass over 601 tokens needs about {} of working memory, more than the {} this build allows; at most 600 tokens fit",
            mb(need),
            mb(budget)
        )),
        "{err}"
    );
    assert!(peak < 64 << 10, "refusing allocated {peak} bytes");
    // Batches count: two sequences of 500 do not fit where one of 600 does.
    let two = m.batch_tensor(&[&ids[..500], &ids[100..600]]).unwrap();
    let err = m.forward(&two, None, None, Logits::Last).unwrap_err().to_string();
    assert!(err.contains("500 tokens × 2 sequences"), "{err}");
    // A cache and the logits rows are part of the need.
    assert!(m.max_tokens(Logits::Last, true) < t);
    assert!(m.max_tokens(Logits::All, false) < t);
    // Without a budget (the CLI) the context is the limit.
    m.set_activation_budget(None);
    assert_eq!(m.max_tokens(Logits::All, true), 1024);

    // The default model (when present): the estimate bounds a 1,000-token
    // pass, and the page's budget (768 MiB) refuses 5,000 tokens.
    let Some(bytes) = default_model_bytes() else { return };
    let mut m = Model::load("default", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let ids: Vec<u32> = (0..1000).map(|i| 30 + i % 10).collect();
    let input = m.ids_tensor(&ids).unwrap();
    let estimate = m.pass_bytes(PassSize::prompt(1000, Logits::Last, true)) as usize;
    let mut cache = KvCache::new(&m.config);
    let (_, peak) = peak_of(|| m.forward(&input, Some(&mut cache), None, Logits::Last).unwrap());
    println!("default model, 1000 tokens: real peak {peak} bytes, estimate {estimate} ({:.2}×)", estimate as f64 / peak as f64);
    assert!(peak <= estimate && estimate <= 3 * peak, "peak {peak}, estimate {estimate}");
    m.set_activation_budget(Some(768 << 20));
    let fit = m.max_tokens(Logits::Last, true);
    println!("default model, 768 MiB: at most {fit} tokens");
    assert!((1000..5000).contains(&fit), "{fit}");
}
