//! Parsing the intervention document (its types are
//! `scalpel_types::document`), naming the intervention and field of any
//! error. Which fields an op takes, and its own checks, live in its file
//! under `ops/`.

use scalpel_types::document::{Document, Intervention, Op, Vector, VectorSource, VERSION};

const COMMON_FIELDS: [&str; 6] = ["hook", "op", "positions", "heads", "neurons", "enabled"];

/// Parses a document, naming the intervention (index and field) on any error.
pub fn parse(json: &str) -> Result<Document, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        let at = match locate_item(json, e.line(), e.column()) {
            Some((i, Some(field))) => format!("intervention {i}: field '{field}': "),
            Some((i, None)) => format!("intervention {i}: "),
            None => String::new(),
        };
        let hint = if e.to_string().contains("number out of range") || json.contains("NaN") || json.contains("Infinity") {
            " (numbers must be finite: JSON has no NaN or Infinity, and values like 1e999 overflow)"
        } else {
            ""
        };
        format!("{at}not valid JSON: {e}{hint}")
    })?;
    parse_value(&v)
}

/// Which element of the top-level "interventions" array holds `line:column`
/// (1-based), found by scanning brackets outside strings.
fn locate_item(json: &str, line: usize, column: usize) -> Option<(usize, Option<String>)> {
    let mut offset = 0;
    for (n, l) in json.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            offset += column.saturating_sub(1).min(l.len());
            break;
        }
        offset += l.len();
    }
    let start = json.find("\"interventions\"")?;
    let bytes = json.as_bytes();
    let mut i = start + json[start..].find('[')? + 1;
    let (mut depth, mut item, mut in_str, mut esc) = (0i32, 0usize, false, false);
    // The last string seen and the last key of the item's own object.
    let (mut str_start, mut last_str, mut key): (usize, Option<String>, Option<String>) = (0, None, None);
    while i < bytes.len() && i < offset {
        let c = bytes[i];
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => {
                    in_str = false;
                    last_str = Some(json[str_start..i].to_owned());
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => {
                    in_str = true;
                    str_start = i + 1;
                }
                b':' if depth == 1 => key = last_str.take(),
                b'[' | b'{' => depth += 1,
                b']' | b'}' => {
                    if depth == 0 {
                        return None;
                    }
                    depth -= 1
                }
                b',' if depth == 0 => {
                    item += 1;
                    key = None;
                }
                _ => {}
            }
        }
        i += 1;
    }
    Some((item, key))
}

/// Checks a `positions`/`keys` value so a typo gets a message naming it.
fn check_positions(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) if ["all", "prompt", "generated"].contains(&s.as_str()) => Ok(()),
        serde_json::Value::String(s) => Err(format!("'{s}' is not one of: all, prompt, generated, a list of positions, {{\"start\", \"end\"}}")),
        serde_json::Value::Array(a) if a.iter().all(|x| x.is_i64()) => Ok(()),
        serde_json::Value::Array(_) => Err("a position list must hold integers".into()),
        serde_json::Value::Object(o) => {
            for k in o.keys() {
                if k != "start" && k != "end" {
                    return Err(format!("unknown field '{k}' in a range (a range has 'start' and 'end')"));
                }
            }
            if o.get("start").is_some_and(|x| x.is_i64()) && o.get("end").is_some_and(|x| x.is_i64()) {
                Ok(())
            } else {
                Err("a range needs integer 'start' and 'end'".into())
            }
        }
        _ => Err("must be 'all', 'prompt', 'generated', a list of positions or {\"start\", \"end\"}".into()),
    }
}

/// Checks a `vector`/`direction` value: numbers, or a known source object.
fn check_vector(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::Array(a) if a.iter().all(|x| x.is_number()) => Ok(()),
        serde_json::Value::Array(_) => Err("a literal vector must hold only numbers".into()),
        serde_json::Value::Object(_) => serde_json::from_value::<VectorSource>(v.clone()).map(|_| ()).map_err(|e| e.to_string()),
        _ => Err("must be a list of numbers or an object with 'from'".into()),
    }
}

/// Checks one list of interventions; `path` prefixes messages for nested lists.
pub(crate) fn parse_items(items: &[serde_json::Value], path: &str) -> Result<Vec<Intervention>, String> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = format!("{path}{i}");
        let o = item.as_object().ok_or(format!("intervention {name}: must be an object"))?;
        let op = o.get("op").and_then(|x| x.as_str()).ok_or(format!("intervention {name}: missing field 'op'"))?;
        let def = crate::ops::by_name(op).ok_or(format!(
            "intervention {name}: unknown op '{op}' ({})",
            crate::ops::names().join(", ")
        ))?;
        let fields = def.fields;
        for k in o.keys() {
            if !COMMON_FIELDS.contains(&k.as_str()) && !fields.contains(&k.as_str()) {
                return Err(format!("intervention {name} (op '{op}'): unknown field '{k}'"));
            }
        }
        for f in ["positions", "keys"] {
            if let Some(v) = o.get(f) {
                check_positions(v).map_err(|e| format!("intervention {name} (op '{op}'): field '{f}': {e}"))?;
            }
        }
        for f in ["vector", "direction"] {
            if let Some(v) = o.get(f) {
                check_vector(v).map_err(|e| format!("intervention {name} (op '{op}'): field '{f}': {e}"))?;
            }
        }
        (def.check)(o, &name)?;
        let parsed: Intervention = serde_json::from_value(item.clone()).map_err(|e| {
            // serde's message names the bad value but not where it is: find the field.
            let msg = e.to_string();
            let field = o.iter().find(|(_, v)| match v {
                serde_json::Value::String(x) => msg.contains(&format!("`{x}`")),
                serde_json::Value::Number(n) => msg.contains(&n.to_string()),
                _ => false,
            });
            match field {
                Some((k, _)) => format!("intervention {name} (op '{op}'): field '{k}': {msg}"),
                None => format!("intervention {name} (op '{op}'): {msg}"),
            }
        })?;
        out.push(parsed);
    }
    Ok(out)
}

/// Parses an already-decoded JSON document.
pub fn parse_value(v: &serde_json::Value) -> Result<Document, String> {
    let obj = v.as_object().ok_or("the document must be a JSON object with 'version' and 'interventions'")?;
    for k in obj.keys() {
        if k != "version" && k != "interventions" {
            return Err(format!("unknown top-level field '{k}' (expected 'version', 'interventions')"));
        }
    }
    let version = obj.get("version").and_then(|x| x.as_u64()).ok_or("missing or non-integer 'version'")?;
    if version != VERSION as u64 {
        return Err(format!("schema version {version} is not supported (this Scalpel reads version {VERSION})"));
    }
    let items = match obj.get("interventions") {
        None => return Ok(Document { version: VERSION, interventions: Vec::new() }),
        Some(x) => x.as_array().ok_or("'interventions' must be an array")?,
    };
    let out = parse_items(items, "")?;
    let runs = prompt_runs(&out, "")?;
    if runs > MAX_DOCUMENT_RUNS {
        return Err(format!(
            "the document asks for {runs} prompt runs (vectors, means and sources); at most {MAX_DOCUMENT_RUNS}, so compiling it stays short"
        ));
    }
    Ok(Document { version: VERSION, interventions: out })
}

/// Most prompts in one prompt set (`over`, `positive`, `negative`).
pub const MAX_PROMPT_SET: usize = 256;
/// Most forward passes a document's vectors, means and sources may take
/// to compile (each prompt runs once for all of an item's hook points).
pub const MAX_DOCUMENT_RUNS: usize = 1024;

/// The forward passes compiling `items` takes; an error names a prompt set
/// over `MAX_PROMPT_SET`.
fn prompt_runs(items: &[Intervention], path: &str) -> Result<usize, String> {
    let mut runs = 0;
    for (i, iv) in items.iter().enumerate() {
        let set = |field: &str, n: usize| -> Result<usize, String> {
            if n > MAX_PROMPT_SET {
                return Err(format!("intervention {path}{i}: field '{field}' has {n} prompts; at most {MAX_PROMPT_SET}"));
            }
            Ok(n)
        };
        let vector = |field: &str, v: &Vector| -> Result<usize, String> {
            match v {
                Vector::From(VectorSource::PromptDiff { .. }) => Ok(2),
                Vector::From(VectorSource::MeanDiff { positive, negative, .. } | VectorSource::Pca { positive, negative, .. }) => {
                    Ok(set(&format!("{field}.positive"), positive.len())? + set(&format!("{field}.negative"), negative.len())?)
                }
                _ => Ok(0),
            }
        };
        runs += match &iv.op {
            Op::Mean { over: Some(p) } => set("over", p.len())?,
            Op::Patch { .. } => 1,
            Op::Add { vector: v, .. } | Op::KvAdd { vector: v, .. } => vector("vector", v)?,
            Op::ProjectOut { direction } => vector("direction", direction)?,
            Op::SetProjection { direction, source, .. } => vector("direction", direction)? + usize::from(source.is_some()),
            Op::Conditional { direction, then, .. } => vector("direction", direction)? + prompt_runs(then, &format!("{path}{i}.then."))?,
            _ => 0,
        };
    }
    Ok(runs)
}
