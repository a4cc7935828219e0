//! Scalpel's quantized kernels in the engine, on tiny random GGUF llamas of
//! every supported weight type (and one unsupported type, which stays on
//! candle): the same logits as candle's kernels, switching both ways, weights
//! and replaced weights.


use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use scalpel_testkit::{tiny_llama, LlamaSpec, GGUF_NAME};
use scalpel_engine::{Kernels, Matrix, Model, ModelSource, Precision};

/// The tiny llama with every matrix (embedding included) quantized to `ty`.
fn quantized_tiny(ty: GgmlDType, type_id: u32) -> Vec<u8> {
    let mut g = tiny_llama(&LlamaSpec { tied: true, ..LlamaSpec::default() });
    for t in &mut g.tensors {
        if t.ne.len() != 2 {
            continue;
        }
        let xs: Vec<f32> = t.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let w = Tensor::from_vec(xs, (t.ne[1] as usize, t.ne[0] as usize), &Device::Cpu).unwrap();
        t.data = QTensor::quantize(&w, ty).unwrap().data().unwrap().into_owned();
        t.ty = type_id;
    }
    g.bytes()
}

fn load(bytes: &[u8], k: Kernels) -> Model {
    Model::load_with(GGUF_NAME, ModelSource::Gguf(bytes), Precision::Quantized, k).unwrap()
}

fn logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    m.logits(ids).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const TYPES: [(GgmlDType, u32, bool); 4] = [
    (GgmlDType::Q4_0, 2, true),
    (GgmlDType::Q4_1, 3, true),
    (GgmlDType::Q8_0, 8, true),
    // Not handled by Scalpel's kernels: stays on candle.
    (GgmlDType::Q5_0, 6, false),
];

#[test]
fn scalpel_kernels_match_candle_on_tiny_models() {
    let ids: Vec<Vec<u32>> = vec![vec![1, 2, 3], (0..40).map(|i| (i * 7 % 200) as u32).collect(), vec![5]];
    for (ty, id, supported) in TYPES {
        let bytes = quantized_tiny(ty, id);
        let candle = load(&bytes, Kernels::Candle);
        let scalpel = load(&bytes, Kernels::Scalpel);
        assert_eq!(candle.kernels(), Kernels::Candle);
        assert_eq!(scalpel.kernels(), Kernels::Scalpel);
        for ids in &ids {
            let (a, b) = (logits(&candle, ids), logits(&scalpel, ids));
            let d = max_diff(&a, &b);
            println!("{ty:?}, {} tokens: max |Δlogit| scalpel vs candle = {d:.2e}", ids.len());
            // Q4_1 (and an unsupported type, still on candle): candle's kernel
            // is scalar in our order, so bit for bit. Q4_0/Q8_0: candle may
            // use AVX2 (another f32 order), so a float-rounding-sized bound.
            if ty == GgmlDType::Q4_1 || !supported {
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{ty:?}: not bit-identical");
            } else {
                assert!(d < 1e-2, "{ty:?}: {d}");
            }
            for (l, m) in [(0, Matrix::Q), (1, Matrix::Down), (1, Matrix::Gate)] {
                let (wa, wb) = (candle.weight(l, m).unwrap(), scalpel.weight(l, m).unwrap());
                assert_eq!(wa.to_vec2::<f32>().unwrap(), wb.to_vec2::<f32>().unwrap(), "{ty:?} weight {l} {m:?}");
            }
        }
    }
}

#[test]
fn switching_kernels_both_ways_keeps_the_numbers() {
    let bytes = quantized_tiny(GgmlDType::Q4_1, 3);
    let ids = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let want = logits(&load(&bytes, Kernels::Candle), &ids);
    let mut m = load(&bytes, Kernels::Scalpel);
    assert_eq!(logits(&m, &ids), want);
    m.set_kernels(Kernels::Candle).unwrap();
    assert_eq!(m.kernels(), Kernels::Candle);
    assert_eq!(logits(&m, &ids), want);
    m.set_kernels(Kernels::Auto).unwrap();
    assert_eq!(m.kernels(), Kernels::Auto.resolve(Precision::Quantized));
    assert_eq!(logits(&m, &ids), want);
}

fn load_f32(bytes: &[u8], k: Kernels) -> Model {
    Model::load_with(GGUF_NAME, ModelSource::Gguf(bytes), Precision::F32, k).unwrap()
}

/// f32 precision over stored blocks: Scalpel's exact kernels (f32
/// activations, weights dequantized in registers) give the dequantize-all
/// path's logits up to summation order, hold the blocks instead of f32
/// values, and read embedding rows from the tied blocks (the same values).
#[test]
fn f32_precision_over_blocks_equals_dequantize_all() {
    let ids: Vec<Vec<u32>> = vec![vec![1, 2, 3], (0..40).map(|i| (i * 7 % 200) as u32).collect(), vec![5]];
    for (ty, id, supported) in TYPES {
        let bytes = quantized_tiny(ty, id);
        let (all, exact) = (load_f32(&bytes, Kernels::Candle), load_f32(&bytes, Kernels::Scalpel));
        assert_eq!(all.kernels(), Kernels::Candle);
        assert_eq!(exact.kernels(), Kernels::Scalpel);
        for ids in &ids {
            let (a, b) = (logits(&all, ids), logits(&exact, ids));
            let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = max_diff(&a, &b);
            println!("{ty:?}, {} tokens: max |Δlogit| exact vs dequantize-all = {d:.2e} (logits up to {scale:.2})", ids.len());
            if supported {
                assert!(d <= 1e-5 * scale.max(1.0), "{ty:?}: {d}");
            } else {
                assert_eq!(a, b, "{ty:?}: not handled by the exact kernels, so dequantized as before");
            }
        }
        for (l, m) in [(0, Matrix::Q), (1, Matrix::Down), (1, Matrix::Gate)] {
            assert_eq!(all.weight(l, m).unwrap().to_vec2::<f32>().unwrap(), exact.weight(l, m).unwrap().to_vec2::<f32>().unwrap());
        }
        let rows = [0u32, 7, 199];
        assert_eq!(all.embedding_rows(&rows).unwrap().to_vec2::<f32>().unwrap(), exact.embedding_rows(&rows).unwrap().to_vec2::<f32>().unwrap());
        assert!(exact.embedding_rows(&[1_000_000]).is_err());
        if supported {
            let (wa, we) = (all.weight_bytes(), exact.weight_bytes());
            println!("{ty:?}: weights hold {wa} bytes dequantized, {we} as blocks ({:.2}x)", we as f64 / wa as f64);
            assert!(we * 3 < wa, "{ty:?}: {we} vs {wa}");
        }
    }
}

/// f32 precision: exact → dequantize-all in place gives a dequantize-all
/// model's logits bit for bit; the way back is refused with a message (the
/// blocks are gone), and the model keeps working.
#[test]
fn f32_kernels_switch_to_dequantize_all_and_refuse_the_way_back() {
    let bytes = quantized_tiny(GgmlDType::Q4_1, 3);
    let ids = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let want = logits(&load_f32(&bytes, Kernels::Candle), &ids);
    let mut m = load_f32(&bytes, Kernels::Scalpel);
    m.set_kernels(Kernels::Candle).unwrap();
    assert_eq!(m.kernels(), Kernels::Candle);
    assert_eq!(logits(&m, &ids), want);
    let e = m.set_kernels(Kernels::Scalpel).unwrap_err().to_string();
    assert!(e.contains("reload the model"), "{e}");
    assert_eq!(logits(&m, &ids), want);
    // An f32 file has no blocks: the choice is reported as candle.
    let f32_file = tiny_llama(&LlamaSpec::default()).bytes();
    assert_eq!(load_f32(&f32_file, Kernels::Scalpel).kernels(), Kernels::Candle);
    // Quantized precision, tied blocks: the embedding follows the kernels both ways.
    let mut q = load(&bytes, Kernels::Scalpel);
    let rows = q.embedding_rows(&[2, 9]).unwrap().to_vec2::<f32>().unwrap();
    q.set_kernels(Kernels::Candle).unwrap();
    assert_eq!(q.embedding_rows(&[2, 9]).unwrap().to_vec2::<f32>().unwrap(), rows);
    q.set_kernels(Kernels::Scalpel).unwrap();
    assert_eq!(q.embedding_rows(&[2, 9]).unwrap().to_vec2::<f32>().unwrap(), rows);
}

#[test]
fn replaced_weights_use_the_chosen_kernels() {
    let bytes = quantized_tiny(GgmlDType::Q4_1, 3);
    let ids = [7u32, 8, 9];
    let mut a = load(&bytes, Kernels::Candle);
    let mut b = load(&bytes, Kernels::Scalpel);
    let w = (a.weight(0, Matrix::Up).unwrap() * 0.5).unwrap();
    a.replace_weight(0, Matrix::Up, w.clone()).unwrap();
    let saved = b.replace_weight(0, Matrix::Up, w).unwrap();
    // Replacements are quantized to Q8_0; candle's Q8_0 may use AVX2.
    let d = max_diff(&logits(&a, &ids), &logits(&b, &ids));
    assert!(d < 1e-2, "{d}");
    b.restore_weight(saved);
    assert_eq!(logits(&b, &ids), logits(&load(&bytes, Kernels::Candle), &ids));
    assert!(b.replace_weight(0, Matrix::Up, Tensor::zeros((3, 3), candle_core::DType::F32, &Device::Cpu).unwrap()).is_err());
}

#[test]
fn kernels_parse_and_print() {
    for k in [Kernels::Auto, Kernels::Candle, Kernels::Scalpel] {
        assert_eq!(k.to_string().parse::<Kernels>().unwrap(), k);
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
    }
    assert!("fast".parse::<Kernels>().is_err());
    for p in Precision::ALL {
        assert_ne!(Kernels::Auto.resolve(p), Kernels::Auto);
    }
    // Natively f32 keeps candle's dequantized matmul (AVX2); wasm32 the exact kernels.
    assert_eq!(Kernels::Auto.resolve(Precision::F32), Kernels::Candle);
}

/// A file read a range at a time, recording each read (start, length).
struct Ranges {
    bytes: Vec<u8>,
    reads: std::cell::RefCell<Vec<(usize, usize)>>,
}

impl scalpel_engine::gguf::ByteSource for Ranges {
    fn len(&self) -> usize {
        self.bytes.len()
    }
    fn read_into(&self, start: usize, dst: &mut [u8]) {
        self.reads.borrow_mut().push((start, dst.len()));
        dst.copy_from_slice(&self.bytes[start..start + dst.len()]);
    }
}

/// The tiny llama with every matrix quantized to `ty` and, when `filler`,
/// a 6 MB metadata array ahead of its tensor table: more header than a
/// `ByteSource`'s first read takes.
fn tiny_with_header(ty: GgmlDType, type_id: u32, filler: bool) -> Vec<u8> {
    let mut g = tiny_llama(&LlamaSpec { tied: true, ..LlamaSpec::default() });
    for t in &mut g.tensors {
        if t.ne.len() == 2 {
            let xs: Vec<f32> = t.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let w = Tensor::from_vec(xs, (t.ne[1] as usize, t.ne[0] as usize), &Device::Cpu).unwrap();
            t.data = QTensor::quantize(&w, ty).unwrap().data().unwrap().into_owned();
            t.ty = type_id;
        }
    }
    if filler {
        let words: Vec<String> = (0..100_000).map(|i| format!("{i:0>52}")).collect();
        g.set("scalpel.test.filler", scalpel_testkit::Meta::strs(&words));
    }
    g.bytes()
}

/// The browser keeps a downloaded model outside wasm memory and the engine
/// reads it a range at a time (`Model::load_gguf_source`): the model is the
/// same as from the file in memory, bit for bit, in both precisions; the
/// header is read from a prefix that grows only while the table goes on,
/// and every other read is one tensor.
#[test]
fn a_file_read_a_range_at_a_time_builds_the_same_model() {
    let ids = [1u32, 5, 9, 2, 7, 3];
    for (ty, type_id) in [(GgmlDType::Q4_1, 3), (GgmlDType::Q8_0, 8), (GgmlDType::Q5_0, 6)] {
        for filler in [false, true] {
            let bytes = tiny_with_header(ty, type_id, filler);
            let parsed = scalpel_engine::gguf::Gguf::parse(GGUF_NAME, &bytes).unwrap();
            let largest = parsed.tensors.iter().map(|t| t.len).max().unwrap();
            drop(parsed);
            for precision in [Precision::F32, Precision::Quantized] {
                let whole = Model::load_with(GGUF_NAME, ModelSource::Gguf(&bytes), precision, Kernels::Auto).unwrap();
                let src = Ranges { bytes: bytes.clone(), reads: Default::default() };
                let ranged = Model::load_gguf_source(GGUF_NAME, &src, precision, Kernels::Auto, None).unwrap();
                let (a, b) = (logits(&whole, &ids), logits(&ranged, &ids));
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{ty:?} {precision:?}: logits differ");
                assert_eq!(whole.weight_bytes(), ranged.weight_bytes());
                let reads = src.reads.borrow();
                let prefixes: Vec<usize> = reads.iter().filter(|r| r.0 == 0).map(|r| r.1).collect();
                let want = if filler { 2 } else { 1 };
                assert_eq!(prefixes.len(), want, "{ty:?} filler {filler}: header reads {prefixes:?} of a {}-byte file", bytes.len());
                assert!(reads.iter().filter(|r| r.0 != 0).all(|r| r.1 <= largest), "a read larger than any tensor: {reads:?}");
            }
        }
    }
}

/// A header fault is reported from the first read: a hostile file does not
/// make the browser copy the rest of it into memory to find out.
#[test]
fn a_bad_header_read_a_range_at_a_time_fails_at_the_first_read() {
    let mut bytes = tiny_with_header(GgmlDType::Q8_0, 8, true);
    bytes[4..8].copy_from_slice(&99u32.to_le_bytes());
    let whole = Model::load(GGUF_NAME, ModelSource::Gguf(&bytes), Precision::F32).err().expect("refused").to_string();
    let src = Ranges { bytes: bytes.clone(), reads: Default::default() };
    let ranged = Model::load_gguf_source(GGUF_NAME, &src, Precision::F32, Kernels::Auto, None).err().expect("refused").to_string();
    assert_eq!(whole, ranged);
    assert!(ranged.contains("version 99"), "{ranged}");
    let reads = src.reads.borrow();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert!(reads[0].1 < bytes.len(), "{reads:?}");
    // A file cut inside its header: the prefix grows to the end, then the
    // fault is named as for the file in memory.
    let cut = tiny_with_header(GgmlDType::Q8_0, 8, true)[..5_000_000].to_vec();
    let whole = Model::load(GGUF_NAME, ModelSource::Gguf(&cut), Precision::F32).err().expect("refused").to_string();
    let src = Ranges { bytes: cut, reads: Default::default() };
    let ranged = Model::load_gguf_source(GGUF_NAME, &src, Precision::F32, Kernels::Auto, None).err().expect("refused").to_string();
    assert_eq!(whole, ranged);
}
