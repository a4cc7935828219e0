//! Vector sources that need more than the model (`{"from": "file"}`,
//! `{"from": "sae"}`) and the SAEs of `sae_clamp` ops, resolved before
//! compiling: values put into the document, SAEs into a side table.

use std::sync::Arc;

use scalpel_dictionaries::Sae;
use scalpel_engine::{HookPoint, Model};
use scalpel_types::document::{Document, Intervention, Op, Vector, VectorSource};

use super::control::{control_layer, read_control_vector};
use super::Res;
pub use crate::context::SaeTable;

/// Reads a file named in a document, by path.
pub type FileReader<'a> = &'a dyn Fn(&str) -> Res<Vec<u8>>;

/// What a document may refer to beyond the model: loaded SAEs and files.
#[derive(Default)]
pub struct Resources<'a> {
    pub saes: Vec<Arc<Sae>>,
    /// Reads a file named in `{"from": "file"}` (the CLI reads the disk; the
    /// browser can serve bytes the user picked). `None`: files are an error.
    pub read_file: Option<FileReader<'a>>,
}

fn sae_at<'r>(model: &Model, res: &'r Resources, point: HookPoint, what: &str) -> Res<&'r Arc<Sae>> {
    let mut found: Option<&Arc<Sae>> = None;
    for s in &res.saes {
        // A transcoder's decoder rows live at its output hook.
        if s.point_out(model)? == point {
            if found.is_some() {
                return Err(format!("{what}: two loaded SAEs read '{}'; load only one", point.name()));
            }
            found = Some(s);
        }
    }
    found.ok_or_else(|| {
        let loaded: Vec<&str> = res.saes.iter().map(|s| s.hook_out()).collect();
        format!(
            "{what}: no SAE is loaded for '{}' (loaded: {}); load one with --sae DIR",
            point.name(),
            if loaded.is_empty() { "none".to_owned() } else { loaded.join(", ") }
        )
    })
}

/// A vector from a file's bytes: a control vector GGUF (`direction.{layer}`)
/// or JSON (a list of numbers, `{"vector": [...]}`, or an intervention
/// document with a literal vector at `hook`).
pub fn vector_from_file(name: &str, bytes: &[u8], layer: Option<usize>, hook: Option<HookPoint>) -> Res<Vec<f32>> {
    if bytes.starts_with(b"GGUF") {
        let (cv, _) = read_control_vector(name, bytes)?;
        let k = match (layer, hook) {
            (Some(k), _) => k,
            (None, Some(p)) => control_layer(p).map_err(|e| format!("{name}: give 'layer' ({e})"))?,
            (None, None) => return Err(format!("{name}: give 'layer' to pick a direction")),
        };
        return cv
            .directions
            .iter()
            .find(|(kk, _)| *kk == k)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                let have: Vec<String> = cv.directions.iter().map(|(k, _)| k.to_string()).collect();
                format!("{name}: no direction.{k} (the file has layers {})", have.join(", "))
            });
    }
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{name}: neither a GGUF control vector nor JSON: {e}"))?;
    let numbers = |v: &serde_json::Value| -> Option<Vec<f32>> {
        v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
    };
    if let Some(xs) = numbers(&v) {
        return Ok(xs);
    }
    if let Some(xs) = v.get("vector").and_then(numbers) {
        return Ok(xs);
    }
    if v.get("interventions").is_some() {
        let doc = crate::parse::parse_value(&v).map_err(|e| format!("{name}: {e}"))?;
        let literal = |iv: &Intervention| -> Option<Vec<f32>> {
            match &iv.op {
                Op::Add { vector: Vector::Values(x), .. }
                | Op::KvAdd { vector: Vector::Values(x), .. }
                | Op::ProjectOut { direction: Vector::Values(x) }
                | Op::SetProjection { direction: Vector::Values(x), .. }
                | Op::Conditional { direction: Vector::Values(x), .. } => Some(x.clone()),
                _ => None,
            }
        };
        let with: Vec<&Intervention> = doc.interventions.iter().filter(|iv| literal(iv).is_some()).collect();
        let pick = match hook {
            Some(p) => with.iter().find(|iv| iv.hook.as_deref() == Some(p.name().as_str())).copied(),
            None => None,
        }
        .or(if with.len() == 1 { Some(with[0]) } else { None });
        return pick.and_then(literal).ok_or_else(|| {
            format!("{name}: the document has {} literal vectors and none at the intervention's hook", with.len())
        });
    }
    Err(format!("{name}: JSON holds no vector (expected a list of numbers, {{\"vector\": [...]}}, or an intervention document)"))
}

fn resolve_vector(model: &Model, res: &Resources, v: &mut Vector, hook: Option<&str>, what: &str) -> Res<()> {
    let Vector::From(src) = v else { return Ok(()) };
    let point_of = |h: &Option<String>| -> Res<Option<HookPoint>> {
        match h.as_deref().or(hook) {
            Some(name) if !name.contains('*') => model.hook_point(name).map(Some).map_err(|e| format!("{what}: {e}")),
            _ => Ok(None),
        }
    };
    let values = match src {
        VectorSource::Sae { latent, hook: h } => {
            let p = point_of(h)?.ok_or_else(|| format!("{what}: 'sae' vectors need one hook (give 'hook')"))?;
            sae_at(model, res, p, what)?.decoder_row(*latent).map_err(|e| format!("{what}: {e}"))?
        }
        VectorSource::File { path, layer } => {
            let read = res.read_file.ok_or_else(|| format!("{what}: vectors from files need a file reader (the CLI provides one)"))?;
            let bytes = read(path).map_err(|e| format!("{what}: {e}"))?;
            vector_from_file(path, &bytes, *layer, point_of(&None)?).map_err(|e| format!("{what}: {e}"))?
        }
        _ => return Ok(()),
    };
    *v = Vector::Values(values);
    Ok(())
}

fn resolve_items(model: &Model, res: &Resources, items: &mut [Intervention], saes: &mut SaeTable, path: &str) -> Res<()> {
    for (i, iv) in items.iter_mut().enumerate() {
        let what = format!("intervention {path}{i}");
        let hook = iv.hook.clone();
        match &mut iv.op {
            Op::Add { vector, .. } | Op::KvAdd { vector, .. } => {
                resolve_vector(model, res, vector, hook.as_deref(), &format!("{what}: field 'vector'"))?
            }
            Op::ProjectOut { direction } | Op::SetProjection { direction, .. } => {
                resolve_vector(model, res, direction, hook.as_deref(), &format!("{what}: field 'direction'"))?
            }
            Op::Conditional { direction, then, .. } => {
                resolve_vector(model, res, direction, hook.as_deref(), &format!("{what}: field 'direction'"))?;
                resolve_items(model, res, then, saes, &format!("{path}{i}.then."))?;
            }
            Op::SaeClamp { .. } => {
                let h = hook.as_deref().ok_or(format!("{what}: missing field 'hook'"))?;
                if h.contains('*') {
                    return Err(format!("{what}: 'sae_clamp' works at one hook (an SAE reads one layer), not '{h}'"));
                }
                let p = model.hook_point(h).map_err(|e| format!("{what}: field 'hook': {e}"))?;
                saes.insert(p, sae_at(model, res, p, &what)?.clone());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Replaces the vector sources that need resources (`sae`, `file`) by their
/// values, and finds the SAEs of `sae_clamp` ops. Run before
/// `Interventions::compile_with`, which takes the SAE table.
pub fn resolve(model: &Model, doc: &Document, res: &Resources) -> Res<(Document, SaeTable)> {
    let mut out = doc.clone();
    let mut saes = SaeTable::new();
    resolve_items(model, res, &mut out.interventions, &mut saes, "")?;
    Ok((out, saes))
}
