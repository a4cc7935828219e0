//! llama.cpp / repeng control vectors: `direction.{k}` tensors in a GGUF
//! file, each added to the output of block `k`; reading, writing, and
//! turning one into an intervention document.

use candle_core::Device;
use scalpel_engine::{HookPoint, Model, Site};
use scalpel_types::document::Document;

use super::{ce, steering_document, Res};

// The file layout and the layer convention (direction.{k} = the output of
// block k) live in scalpel-export, which writes control vectors for
// llama.cpp; this module reads them and turns them into documents.
pub use scalpel_export::llama_cpp::{control_hook, control_layer, write_control_vector, ControlVector};

/// Reads a control vector with the validating GGUF reader. `name` names the
/// file in errors. Returns the vector and warnings.
pub fn read_control_vector(name: &str, bytes: &[u8]) -> Res<(ControlVector, Vec<String>)> {
    let g = scalpel_engine::gguf::Gguf::parse(name, bytes).map_err(ce)?;
    let mut warnings = Vec::new();
    match g.get("general.architecture").map(|v| v.as_str()) {
        Some(Some("controlvector")) => {}
        Some(Some(other)) => {
            return Err(format!(
                "{name}: general.architecture is '{other}', not 'controlvector': this is not a control vector file"
            ))
        }
        Some(None) => return Err(format!("{name}: general.architecture is not a string")),
        None => warnings.push(format!("{name}: no general.architecture key (expected 'controlvector'); reading the direction.* tensors anyway")),
    }
    let model_hint = g.get("controlvector.model_hint").and_then(|v| v.as_str()).map(str::to_owned);
    let mut dirs: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut d: Option<usize> = None;
    for t in &g.tensors {
        let k = t
            .name
            .strip_prefix("direction.")
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| format!("{name}: tensor '{}' is not named direction.<layer>", t.name))?;
        if t.shape.len() != 1 {
            return Err(format!("{name}: tensor '{}' has shape {:?}; a direction is one-dimensional", t.name, t.shape));
        }
        if t.shape[0] == 0 {
            return Err(format!("{name}: tensor '{}' has no values", t.name));
        }
        match d {
            None => d = Some(t.shape[0]),
            Some(d0) if d0 != t.shape[0] => {
                return Err(format!("{name}: tensor '{}' has {} values but the others have {d0}", t.name, t.shape[0]))
            }
            _ => {}
        }
        let v: Vec<f32> = g
            .qtensor(&t.name)
            .and_then(|q| Ok(q.dequantize(&Device::Cpu)?))
            .map_err(ce)?
            .to_vec1()
            .map_err(ce)?;
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!("{name}: tensor '{}' has a non-finite value at index {j}", t.name));
        }
        // llama.cpp sums repeated layers of one file.
        match dirs.iter_mut().find(|(kk, _)| *kk == k) {
            Some((_, acc)) => {
                acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
                // Two finite values can sum past f32::MAX.
                if let Some(j) = acc.iter().position(|x| !x.is_finite()) {
                    return Err(format!("{name}: the tensors of layer {k} (the last '{}') sum to a non-finite value at index {j}", t.name));
                }
            }
            None => dirs.push((k, v)),
        }
    }
    if dirs.is_empty() {
        return Err(format!("{name}: no direction.* tensors"));
    }
    dirs.sort_by_key(|x| x.0);
    if let Some(n) = g.get("controlvector.layer_count").and_then(|v| v.as_u64()) {
        if n as usize != dirs.len() {
            warnings.push(format!("{name}: controlvector.layer_count is {n} but the file has {} directions", dirs.len()));
        }
    }
    Ok((ControlVector { model_hint, directions: dirs }, warnings))
}

/// Turns a control vector into an intervention document for `model`: one
/// `add` at `blocks.{k}.hook_resid_post` per direction, at every position
/// (llama.cpp's behaviour, prompt included), times `scale` (its strength).
pub fn control_vector_document(model: &Model, cv: &ControlVector, scale: f32) -> Res<(Document, Vec<String>)> {
    let mut warnings = Vec::new();
    let arch = model.config.arch.name();
    if let Some(h) = &cv.model_hint {
        if !h.is_empty() && h != arch {
            warnings.push(format!("the control vector was made for a '{h}' model; this model is '{arch}'"));
        }
    }
    let (n, d) = (model.config.n_layers, model.config.d_model);
    let mut points = Vec::new();
    let mut vectors = Vec::new();
    for (k, v) in &cv.directions {
        if v.len() != d {
            return Err(format!("direction.{k} has {} values; this model's d_model is {d}", v.len()));
        }
        if *k >= n {
            return Err(format!(
                "direction.{k} is past the model's last block ({}): it would be added to the output of block {k}",
                n - 1
            ));
        }
        if *k == 0 {
            warnings.push("direction.0 (block 0's output) is applied here, but llama.cpp rejects layer index 0".into());
        }
        points.push(HookPoint::block(*k, Site::ResidPost));
        vectors.push(v.clone());
    }
    Ok((steering_document(&points, &vectors, scale), warnings))
}

/// A control vector from extracted vectors at residual-stream points.
/// Layer 0 (block 0's output) is left out: llama.cpp refuses the whole file
/// if it has `direction.0`.
pub fn to_control_vector(model: &Model, points: &[HookPoint], vectors: &[Vec<f32>], normalize: bool) -> Res<(ControlVector, Vec<String>)> {
    let mut dirs = Vec::new();
    let mut warnings = Vec::new();
    for (p, v) in points.iter().zip(vectors) {
        if p.site == Site::ResidPre && p.layer == Some(0) {
            warnings.push(format!("{}: left out of the control vector (the embeddings are no block's output)", p.name()));
            continue;
        }
        let k = control_layer(*p)?;
        if k == 0 {
            warnings.push(format!("{}: left out of the control vector (llama.cpp rejects direction.0)", p.name()));
            continue;
        }
        let mut v = v.clone();
        if normalize {
            let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            if n > 0.0 {
                v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
            }
        }
        dirs.push((k, v));
    }
    if dirs.is_empty() {
        return Err("no layer can be written as a control vector".into());
    }
    dirs.sort_by_key(|x| x.0);
    Ok((ControlVector { model_hint: Some(model.config.arch.name().to_owned()), directions: dirs }, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_vector_round_trip() {
        let cv = ControlVector {
            model_hint: Some("llama".into()),
            directions: vec![(1, vec![0.5, -1.0, 2.0]), (3, vec![1e-3, 0.0, -7.25])],
        };
        let bytes = write_control_vector(&cv).unwrap();
        let (back, warnings) = read_control_vector("t.gguf", &bytes).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(back, cv);
    }

    #[test]
    fn control_vector_rejects_model_files_and_bad_names() {
        let cv = ControlVector { model_hint: None, directions: vec![(2, vec![1.0; 4])] };
        let good = write_control_vector(&cv).unwrap();
        // The first 'controlvector' is general.architecture's value: make it 'controlvectoX'.
        let mut bytes = good.clone();
        let pos = bytes.windows(13).position(|w| w == b"controlvector").unwrap();
        bytes[pos + 12] = b'X';
        assert!(read_control_vector("t.gguf", &bytes).unwrap_err().contains("not a control vector"));
        let mut bytes = good;
        let pos = bytes.windows(9).position(|w| w == b"direction").unwrap();
        bytes[pos + 8] = b'X';
        assert!(read_control_vector("t.gguf", &bytes).unwrap_err().contains("not named direction.<layer>"));
    }

    /// Found by fuzzing (fuzz/regressions/control_vector/): each was read,
    /// then refused when written back or used.
    #[test]
    fn control_vector_rejects_empty_and_overflowing_directions() {
        let mut empty = scalpel_testkit::Gguf::new();
        empty.set("general.architecture", scalpel_testkit::Meta::str("controlvector"));
        empty.tensors = vec![scalpel_testkit::TensorSpec::f32("direction.2", &[0], &[])];
        let err = read_control_vector("t.gguf", &empty.bytes()).unwrap_err();
        assert!(err.contains("t.gguf") && err.contains("'direction.2' has no values"), "{err}");
        // A layer's repeated tensors are summed (direction.01 is layer 1 too): 3e38 + 3e38 is not a float.
        let mut twice = empty;
        twice.tensors = vec![
            scalpel_testkit::TensorSpec::f32("direction.1", &[2], &[3e38, 0.0]),
            scalpel_testkit::TensorSpec::f32("direction.01", &[2], &[3e38, 1.0]),
        ];
        let err = read_control_vector("t.gguf", &twice.bytes()).unwrap_err();
        assert!(err.contains("layer 1 (the last 'direction.01') sum to a non-finite value at index 0"), "{err}");
        let no_values = ControlVector { model_hint: None, directions: vec![(0, vec![])] };
        assert_eq!(write_control_vector(&no_values).unwrap_err(), "direction.0 has no values");
    }

    #[test]
    fn control_layers_map_to_resid_post() {
        assert_eq!(control_layer(HookPoint::block(5, Site::ResidPost)), Ok(5));
        assert_eq!(control_layer(HookPoint::block(5, Site::ResidPre)), Ok(4));
        assert!(control_layer(HookPoint::block(0, Site::ResidPre)).is_err());
        assert!(control_layer(HookPoint::block(3, Site::MlpOut)).is_err());
    }
}
