//! One pass of a dictionary over a corpus that serves every latent's
//! dashboard: each latent's top-activating windows, how often it fires and
//! a histogram of its positive activations. The page runs it in the worker
//! (with progress and Stop, resumable) and caches `to_bytes` in IndexedDB;
//! `scalpel features --latent I --corpus FILE` finds the same contexts one
//! latent at a time (`features::top_contexts`), and the tests hold the two
//! equal.

use candle_core::Tensor;
use scalpel_engine::Model;

use crate::features::encode_latents;
use crate::sae::{ce, Res, Sae};
use scalpel_types::features::{Context, Histogram};

/// Histogram bins: log-spaced, four per decade, edges 10^-2 … 10^3.
pub const BINS: usize = 20;

pub fn histogram_edges() -> Vec<f32> {
    (0..=BINS).map(|i| 10f32.powf(-2.0 + i as f32 / 4.0)).collect()
}

fn bin_of(a: f32) -> usize {
    ((a.log10() + 2.0) * 4.0).floor().clamp(0.0, (BINS - 1) as f32) as usize
}

/// A corpus as the page and the CLI read it: one document per non-empty
/// line, tokenized with the model's tokenizer, cut into windows of at most
/// `max_tokens`.
pub fn corpus_windows(model: &Model, text: &str, max_tokens: usize) -> Res<Vec<Vec<u32>>> {
    let mut wins = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ids = model.tokenizer().encode(line).map_err(ce)?;
        wins.extend(crate::features::windows(&ids, max_tokens));
    }
    Ok(wins)
}

/// Where a latent peaks in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub window: u32,
    pub position: u32,
    pub activation: f32,
}

/// Every latent's findings over the windows `0..windows` of a corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusIndex {
    pub d_sae: usize,
    /// Contexts kept per latent.
    pub keep: usize,
    pub windows: usize,
    pub windows_total: usize,
    pub tokens: u64,
    top_len: Vec<u32>,
    top: Vec<Hit>,
    fires: Vec<u32>,
    max: Vec<f32>,
    hist: Vec<u32>,
}

/// Most contexts kept per latent, and most latents (bounds what a cached
/// index may ask to allocate).
pub const MAX_KEEP: usize = 100;
pub const MAX_LATENTS: usize = 1 << 22;

const MAGIC: &[u8; 4] = b"SCXI";
const VERSION: u32 = 1;
const HEADER: usize = 4 + 4 * 5 + 8;

impl CorpusIndex {
    pub fn new(d_sae: usize, keep: usize, windows_total: usize) -> Res<CorpusIndex> {
        if keep == 0 || keep > MAX_KEEP {
            return Err(format!("contexts per latent: {keep} (1..={MAX_KEEP})"));
        }
        if d_sae == 0 || d_sae > MAX_LATENTS {
            return Err(format!("a corpus index of {d_sae} latents (1..={MAX_LATENTS})"));
        }
        let dummy = Hit { window: 0, position: 0, activation: 0.0 };
        Ok(CorpusIndex {
            d_sae,
            keep,
            windows: 0,
            windows_total,
            tokens: 0,
            top_len: vec![0; d_sae],
            top: vec![dummy; d_sae * keep],
            fires: vec![0; d_sae],
            max: vec![0.0; d_sae],
            hist: vec![0; d_sae * BINS],
        })
    }

    pub fn complete(&self) -> bool {
        self.windows >= self.windows_total
    }

    /// Latent `j`'s top windows, highest activation first (ties: corpus order).
    pub fn hits(&self, j: usize) -> &[Hit] {
        &self.top[j * self.keep..j * self.keep + self.top_len[j] as usize]
    }

    /// Token positions where latent `j` is positive.
    pub fn fires(&self, j: usize) -> u64 {
        self.fires[j] as u64
    }

    pub fn max(&self, j: usize) -> f32 {
        self.max[j]
    }

    pub fn histogram(&self, j: usize) -> Histogram {
        Histogram { edges: histogram_edges(), counts: self.hist[j * BINS..(j + 1) * BINS].to_vec() }
    }

    /// Adds window `window`'s latents (`[t, d_sae]`, row-major).
    pub fn add_window(&mut self, window: usize, t: usize, latents: &[f32]) {
        let d = self.d_sae;
        // (max, position) of each latent that fires in this window.
        let mut peak: Vec<(u32, f32, u32)> = Vec::new();
        let mut slot: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        for p in 0..t {
            for (j, &a) in latents[p * d..(p + 1) * d].iter().enumerate() {
                if a > 0.0 {
                    self.fires[j] += 1;
                    self.hist[j * BINS + bin_of(a)] += 1;
                    if a > self.max[j] {
                        self.max[j] = a;
                    }
                    match slot.get(&(j as u32)) {
                        Some(&s) if peak[s].1 >= a => {}
                        Some(&s) => peak[s] = (j as u32, a, p as u32),
                        None => {
                            slot.insert(j as u32, peak.len());
                            peak.push((j as u32, a, p as u32));
                        }
                    }
                }
            }
        }
        for (j, activation, position) in peak {
            let j = j as usize;
            let hit = Hit { window: window as u32, position, activation };
            let len = self.top_len[j] as usize;
            let list = &mut self.top[j * self.keep..(j + 1) * self.keep];
            let at = list[..len].partition_point(|h| h.activation >= activation);
            if at < self.keep {
                let end = len.min(self.keep - 1);
                list.copy_within(at..end, at + 1);
                list[at] = hit;
                self.top_len[j] = (len + 1).min(self.keep) as u32;
            }
        }
        self.windows = self.windows.max(window + 1);
        self.tokens += t as u64;
    }

    /// The index as bytes (little-endian), for the browser's cache.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::size(self.d_sae, self.keep).unwrap_or(0));
        b.extend_from_slice(MAGIC);
        for v in [VERSION, self.d_sae as u32, self.keep as u32, self.windows as u32, self.windows_total as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.tokens.to_le_bytes());
        self.top_len.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
        for h in &self.top {
            b.extend_from_slice(&h.window.to_le_bytes());
            b.extend_from_slice(&h.position.to_le_bytes());
            b.extend_from_slice(&h.activation.to_le_bytes());
        }
        self.fires.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
        self.max.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
        self.hist.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
        b
    }

    fn size(d_sae: usize, keep: usize) -> Option<usize> {
        let per_latent = 4 + keep.checked_mul(12)? + 4 + 4 + 4 * BINS;
        d_sae.checked_mul(per_latent)?.checked_add(HEADER)
    }

    /// Reads `to_bytes`' output back, checking every field: a cache entry
    /// that is damaged or from another version is refused by name (the
    /// caller computes the index again), never trusted.
    pub fn from_bytes(b: &[u8]) -> Res<CorpusIndex> {
        let bad = |what: &str| format!("cached corpus index: {what}");
        if b.len() < HEADER || &b[..4] != MAGIC {
            return Err(bad("not a corpus index"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        if u32_at(4) != VERSION {
            return Err(bad(&format!("version {} (this build reads {VERSION})", u32_at(4))));
        }
        let (d_sae, keep, windows, windows_total) = (u32_at(8) as usize, u32_at(12) as usize, u32_at(16) as usize, u32_at(20) as usize);
        let tokens = u64::from_le_bytes(b[24..32].try_into().unwrap());
        if keep == 0 || keep > MAX_KEEP || d_sae == 0 || d_sae > MAX_LATENTS || windows > windows_total {
            return Err(bad("header out of range"));
        }
        if Self::size(d_sae, keep) != Some(b.len()) {
            return Err(bad(&format!("{} bytes; {d_sae} latents × {keep} contexts need {:?}", b.len(), Self::size(d_sae, keep))));
        }
        let mut ix = CorpusIndex::new(d_sae, keep, windows_total)?;
        ix.windows = windows;
        ix.tokens = tokens;
        let mut at = HEADER;
        let mut next = || {
            let v = u32_at(at);
            at += 4;
            v
        };
        for j in 0..d_sae {
            ix.top_len[j] = next();
        }
        for h in ix.top.iter_mut() {
            *h = Hit { window: next(), position: next(), activation: f32::from_bits(next()) };
        }
        for j in 0..d_sae {
            ix.fires[j] = next();
        }
        for j in 0..d_sae {
            ix.max[j] = f32::from_bits(next());
        }
        for v in ix.hist.iter_mut() {
            *v = next();
        }
        for j in 0..d_sae {
            let hits = ix.top_len[j] as usize;
            if hits > keep {
                return Err(bad(&format!("latent {j} has {hits} contexts (at most {keep})")));
            }
            let list = ix.hits(j);
            let ok = list.iter().all(|h| h.activation.is_finite() && h.activation > 0.0 && (h.window as usize) < windows)
                && list.windows(2).all(|w| w[0].activation >= w[1].activation)
                && ix.max[j].is_finite();
            if !ok {
                return Err(bad(&format!("latent {j}'s contexts are not a valid top list")));
            }
        }
        Ok(ix)
    }
}

/// Reads windows `index.windows..` of `windows` into `index`, calling
/// `progress(done, total)` after each; returning false stops (the index
/// keeps what was read, and a later call resumes). Returns whether the
/// whole corpus has been read.
pub fn index_corpus(
    model: &Model,
    sae: &Sae,
    windows: &[Vec<u32>],
    index: &mut CorpusIndex,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Res<bool> {
    if index.d_sae != sae.d_sae || index.windows_total != windows.len() {
        return Err(format!(
            "the corpus index is for {} latents over {} windows; this is {} latents over {} windows",
            index.d_sae,
            index.windows_total,
            sae.d_sae,
            windows.len()
        ));
    }
    for w in index.windows..windows.len() {
        let ids = &windows[w];
        if ids.is_empty() {
            index.windows = w + 1;
        } else {
            let f = encode_latents(model, sae, ids)?;
            let flat: Vec<f32> = f.flatten_all().and_then(|t| t.to_vec1()).map_err(ce)?;
            index.add_window(w, ids.len(), &flat);
        }
        if !progress(w + 1, windows.len()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Latent `latent`'s top contexts as the index found them, each with the
/// latent's activation at every position of its window (encoded again:
/// the same computation as the pass, so the same numbers).
pub fn contexts(model: &Model, sae: &Sae, windows: &[Vec<u32>], index: &CorpusIndex, latent: usize) -> Res<Vec<Context>> {
    if latent >= index.d_sae {
        return Err(format!("{}: latent {latent} is out of range (d_sae = {})", sae.name, sae.d_sae));
    }
    let mut out = Vec::new();
    for h in index.hits(latent) {
        let ids = windows.get(h.window as usize).ok_or("the corpus index names a window the corpus does not have")?;
        let f = encode_latents(model, sae, ids)?;
        let activations = column(&f, latent)?;
        out.push(Context {
            window: h.window as usize,
            ids: ids.clone(),
            tokens: model.tokenizer().text_pieces(ids),
            position: h.position as usize,
            activation: h.activation,
            activations,
        });
    }
    Ok(out)
}

pub(crate) fn column(f: &Tensor, latent: usize) -> Res<Vec<f32>> {
    f.narrow(1, latent, 1).and_then(|c| c.flatten_all()).and_then(|c| c.to_vec1()).map_err(ce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(windows: &[Vec<Vec<f32>>], keep: usize) -> CorpusIndex {
        let d = windows[0][0].len();
        let mut ix = CorpusIndex::new(d, keep, windows.len()).unwrap();
        for (w, rows) in windows.iter().enumerate() {
            let flat: Vec<f32> = rows.concat();
            ix.add_window(w, rows.len(), &flat);
        }
        ix
    }

    #[test]
    fn keeps_each_latents_best_windows_first_position_on_ties_corpus_order_on_equal_activations() {
        // Two latents over four windows of two positions.
        let ix = index_of(
            &[
                vec![vec![1.0, 0.0], vec![3.0, 0.0]],
                vec![vec![3.0, 2.0], vec![3.0, 0.0]],
                vec![vec![0.5, 0.0], vec![0.0, 0.0]],
                vec![vec![4.0, 2.0], vec![0.0, 2.0]],
            ],
            3,
        );
        let h = ix.hits(0);
        assert_eq!(h.iter().map(|h| (h.window, h.position, h.activation)).collect::<Vec<_>>(), vec![(3, 0, 4.0), (0, 1, 3.0), (1, 0, 3.0)]);
        let h = ix.hits(1);
        assert_eq!(h.iter().map(|h| (h.window, h.position)).collect::<Vec<_>>(), vec![(1, 0), (3, 0)]);
        assert_eq!((ix.fires(0), ix.fires(1)), (6, 3));
        assert_eq!(ix.max(0), 4.0);
        assert_eq!(ix.histogram(1).counts.iter().sum::<u32>(), 3);
        assert_eq!(ix.tokens, 8);
        assert!(ix.complete());
    }

    #[test]
    fn bins_are_log_spaced_and_clamped() {
        assert_eq!(bin_of(0.001), 0);
        assert_eq!(bin_of(0.01), 0);
        assert_eq!(bin_of(1.0), 8);
        assert_eq!(bin_of(1e9), BINS - 1);
        let e = histogram_edges();
        assert_eq!(e.len(), BINS + 1);
        assert!((e[8] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bytes_round_trip_and_damage_is_refused() {
        let ix = index_of(&[vec![vec![1.0, 0.0, 2.0]], vec![vec![0.0, 5.0, 2.5]]], 2);
        let b = ix.to_bytes();
        assert_eq!(CorpusIndex::from_bytes(&b).unwrap(), ix);
        for cut in [0, 3, 10, b.len() - 1] {
            assert!(CorpusIndex::from_bytes(&b[..cut]).is_err(), "cut at {cut}");
        }
        // A huge latent count in the header is refused before allocating.
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(CorpusIndex::from_bytes(&huge).unwrap_err().contains("header"));
        // A context in a window past the end, and a NaN activation.
        let mut bad = b.clone();
        let first_hit = HEADER + 3 * 4;
        bad[first_hit..first_hit + 4].copy_from_slice(&9u32.to_le_bytes());
        assert!(CorpusIndex::from_bytes(&bad).unwrap_err().contains("latent 0"));
        let mut nan = b.clone();
        nan[first_hit + 8..first_hit + 12].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
        assert!(CorpusIndex::from_bytes(&nan).is_err());
        let mut v = b;
        v[4] = 9;
        assert!(CorpusIndex::from_bytes(&v).unwrap_err().contains("version 9"));
    }
}
