//! The page's shareable state: everything a link reproduces (model source,
//! prompts, sampling, interventions, open panel). It lives in the URL
//! fragment as base64url JSON (`#s=…`), is validated on the way in, and
//! turns into an intervention document (docs/interventions.md) for the worker.

use crate::protocol::{Kernels, ModelSource, PatchSpec, Precision, Sampling};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const STATE_VERSION: u32 = 1;
/// Longest link state accepted (characters of the encoded fragment).
pub const MAX_LINK_CHARS: usize = 400_000;
const MAX_TEXT: usize = 20_000;
const MAX_ITEMS: usize = 32;
const MAX_VECTOR: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Panel {
    #[default]
    Steer,
    Patch,
    Lens,
    Attention,
    Attribution,
}

impl Panel {
    pub const ALL: [Panel; 5] = [Panel::Steer, Panel::Patch, Panel::Lens, Panel::Attention, Panel::Attribution];
    pub fn title(self) -> &'static str {
        match self {
            Panel::Steer => "Generate & intervene",
            Panel::Patch => "Activation patching",
            Panel::Lens => "Logit lens",
            Panel::Attention => "Attention",
            Panel::Attribution => "Logit attribution & neurons",
        }
    }
    pub fn id(self) -> &'static str {
        match self {
            Panel::Steer => "steer",
            Panel::Patch => "patch",
            Panel::Lens => "lens",
            Panel::Attention => "attention",
            Panel::Attribution => "attribution",
        }
    }
}

/// The operation of a stack item, with the controls it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UiOp {
    /// Steering: h += strength · v.
    Add,
    /// Multiply the selected units by `strength`.
    Scale,
    Zero,
    Mean,
    /// Remove the component along the vector's direction.
    ProjectOut,
    /// Any intervention as raw JSON (every op of the document format).
    Json,
}

impl UiOp {
    pub const ALL: [UiOp; 6] = [UiOp::Add, UiOp::Scale, UiOp::Zero, UiOp::Mean, UiOp::ProjectOut, UiOp::Json];
    pub fn as_str(self) -> &'static str {
        match self {
            UiOp::Add => "add",
            UiOp::Scale => "scale",
            UiOp::Zero => "zero",
            UiOp::Mean => "mean",
            UiOp::ProjectOut => "project_out",
            UiOp::Json => "json",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            UiOp::Add => "Steer (add a vector)",
            UiOp::Scale => "Scale units",
            UiOp::Zero => "Zero-ablate",
            UiOp::Mean => "Mean-ablate",
            UiOp::ProjectOut => "Project out a direction",
            UiOp::Json => "Custom (JSON)",
        }
    }
    pub fn parse(s: &str) -> Option<UiOp> {
        UiOp::ALL.into_iter().find(|o| o.as_str() == s)
    }
    pub fn needs_vector(self) -> bool {
        matches!(self, UiOp::Add | UiOp::ProjectOut)
    }
}

/// Where a vector comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum VectorSpec {
    /// ActAdd: act(plus) − act(minus) at the item's hook, last token.
    PromptPair { plus: String, minus: String },
    /// CAA (mean difference) or RepE (first principal component) of two prompt sets, one per line.
    Sets { positive: String, negative: String, pca: bool },
    /// A llama.cpp control vector (GGUF) read from a file: `(k, values)`,
    /// added at `blocks.{k}.hook_resid_post` (its own layers).
    Control { name: String, directions: Vec<(u32, Vec<f32>)> },
    /// Literal values (e.g. an SAE decoder row), with where they came from.
    Literal { label: String, values: Vec<f32> },
}

impl Default for VectorSpec {
    fn default() -> Self {
        VectorSpec::PromptPair { plus: "I love you".into(), minus: "I hate you".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackItem {
    pub id: u32,
    pub enabled: bool,
    pub op: UiOp,
    /// Hook site after `blocks.{l}.`, e.g. `hook_resid_pre`, `attn.hook_z`.
    pub site: String,
    /// A layer, or None for every layer (`blocks.*`).
    pub layer: Option<u32>,
    /// `all`, `prompt`, `generated`, a list `0, -1`, or a range `2..5`.
    pub positions: String,
    /// Comma-separated heads (per-head hooks), empty = all.
    pub heads: String,
    /// Comma-separated units of the last axis (neurons), empty = all.
    pub neurons: String,
    /// Scale for add, factor for scale.
    pub strength: f32,
    pub vector: VectorSpec,
    /// The layer a prompt-built vector is read at; None = the item's own
    /// layer. Needed when the item covers every layer (directional ablation:
    /// one direction, read at one layer, removed everywhere).
    #[serde(default)]
    pub vector_layer: Option<u32>,
    /// The intervention for `UiOp::Json`.
    pub json: String,
}

impl StackItem {
    pub fn new(id: u32, op: UiOp, n_layers: u32) -> StackItem {
        let mid = n_layers / 3;
        let (site, strength) = match op {
            UiOp::Add => ("hook_resid_pre", 4.0),
            UiOp::Scale => ("mlp.hook_post", 0.0),
            UiOp::Zero => ("attn.hook_z", 1.0),
            UiOp::Mean => ("mlp.hook_post", 1.0),
            UiOp::ProjectOut => ("hook_resid_post", 1.0),
            UiOp::Json => ("hook_resid_pre", 1.0),
        };
        StackItem {
            id,
            enabled: true,
            op,
            site: site.into(),
            layer: if op == UiOp::ProjectOut { None } else { Some(mid) },
            positions: "all".into(),
            heads: if op == UiOp::Zero { "0".into() } else { String::new() },
            neurons: String::new(),
            strength,
            vector: VectorSpec::default(),
            vector_layer: None,
            json: format!(r#"{{"hook": "blocks.{mid}.hook_resid_pre", "op": "scale", "factor": 0.5}}"#),
        }
    }

    pub fn hook(&self) -> String {
        match self.layer {
            Some(l) => format!("blocks.{l}.{}", self.site),
            None => format!("blocks.*.{}", self.site),
        }
    }

    /// The interventions this item stands for (a control vector is one per layer).
    pub fn to_json(&self) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        if self.op == UiOp::Json {
            let v: Value = serde_json::from_str(&self.json).map_err(|e| format!("custom JSON: {e}"))?;
            let mut v = match v {
                Value::Object(_) => v,
                _ => return Err("custom JSON must be one intervention object".into()),
            };
            if !self.enabled {
                v["enabled"] = json!(false);
            }
            out.push(v);
            return Ok(out);
        }
        if let (UiOp::Add, VectorSpec::Control { directions, .. }) = (self.op, &self.vector) {
            for (k, values) in directions {
                let mut v = json!({"hook": format!("blocks.{k}.hook_resid_post"), "op": "add", "vector": values, "scale": self.strength});
                self.common(&mut v, false)?;
                out.push(v);
            }
            return Ok(out);
        }
        let mut v = json!({"hook": self.hook(), "op": self.op.as_str()});
        match self.op {
            UiOp::Add => {
                v["vector"] = self.vector_json()?;
                v["scale"] = json!(self.strength);
            }
            UiOp::Scale => v["factor"] = json!(self.strength),
            UiOp::ProjectOut => v["direction"] = self.vector_json()?,
            UiOp::Zero | UiOp::Mean | UiOp::Json => {}
        }
        self.common(&mut v, true)?;
        out.push(v);
        Ok(out)
    }

    fn common(&self, v: &mut Value, units: bool) -> Result<(), String> {
        v["positions"] = parse_positions(&self.positions)?;
        if units {
            if let Some(h) = parse_list("heads", &self.heads)? {
                v["heads"] = json!(h);
            }
            if let Some(n) = parse_list("neurons", &self.neurons)? {
                v["neurons"] = json!(n);
            }
        }
        if !self.enabled {
            v["enabled"] = json!(false);
        }
        Ok(())
    }

    /// Where a prompt-built vector is read: the item's hook, or `vector_layer`.
    fn read_hook(&self) -> Result<Option<String>, String> {
        match (self.vector_layer, self.layer) {
            (Some(l), _) => Ok(Some(format!("blocks.{l}.{}", self.site))),
            (None, Some(_)) => Ok(None),
            (None, None) => Err("with “all layers”, choose the layer the vector is read at".into()),
        }
    }

    fn vector_json(&self) -> Result<Value, String> {
        let mut v = self.vector_source()?;
        if matches!(self.vector, VectorSpec::PromptPair { .. } | VectorSpec::Sets { .. }) {
            if let Some(h) = self.read_hook()? {
                v["hook"] = json!(h);
            }
        }
        Ok(v)
    }

    fn vector_source(&self) -> Result<Value, String> {
        Ok(match &self.vector {
            VectorSpec::PromptPair { plus, minus } => json!({"from": "prompt_diff", "plus": plus, "minus": minus}),
            VectorSpec::Sets { positive, negative, pca } => {
                let (p, n) = (lines(positive), lines(negative));
                if p.is_empty() || n.is_empty() {
                    return Err("both prompt sets need at least one line".into());
                }
                if *pca {
                    json!({"from": "pca", "positive": p, "negative": n})
                } else {
                    json!({"from": "mean_diff", "positive": p, "negative": n})
                }
            }
            VectorSpec::Literal { values, .. } => {
                if values.is_empty() {
                    return Err("the vector is empty: load it first".into());
                }
                json!(values)
            }
            VectorSpec::Control { directions, .. } => {
                // As a direction at this item's own hook: the layer's direction.
                let l = self.layer.ok_or("a control-vector direction needs one layer")?;
                let k = if self.site == "hook_resid_pre" { l.checked_sub(1) } else { Some(l) };
                let d = directions.iter().find(|(kk, _)| Some(*kk) == k).ok_or(format!("the control vector has no direction for layer {l}"))?;
                json!(d.1)
            }
        })
    }
}

pub fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// `all` | `prompt` | `generated` | `0, 2, -1` | `2..5`.
pub fn parse_positions(s: &str) -> Result<Value, String> {
    let t = s.trim();
    if t.is_empty() || t == "all" || t == "prompt" || t == "generated" {
        return Ok(json!(if t.is_empty() { "all" } else { t }));
    }
    if let Some((a, b)) = t.split_once("..") {
        let a: i64 = a.trim().parse().map_err(|_| format!("positions: '{}' is not a number", a.trim()))?;
        let b: i64 = b.trim().parse().map_err(|_| format!("positions: '{}' is not a number", b.trim()))?;
        return Ok(json!({"start": a, "end": b}));
    }
    let mut v = Vec::new();
    for p in t.split(',') {
        let p = p.trim();
        v.push(p.parse::<i64>().map_err(|_| format!("positions: '{p}' is not a number (use all, prompt, generated, a list like 0,-1 or a range like 2..5)"))?);
    }
    Ok(json!(v))
}

fn parse_list(what: &str, s: &str) -> Result<Option<Vec<u32>>, String> {
    let t = s.trim();
    if t.is_empty() || t == "all" {
        return Ok(None);
    }
    t.split(',')
        .map(|x| x.trim().parse::<u32>().map_err(|_| format!("{what}: '{}' is not a non-negative number", x.trim())))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LensInputs {
    pub target: String,
    pub intervened: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributionInputs {
    pub answer: String,
    pub wrong: String,
    pub layer: u32,
    pub neuron: u32,
}

/// Everything a link carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shared {
    pub v: u32,
    /// None: the default model.
    pub model: Option<ModelSource>,
    pub precision: Precision,
    #[serde(default)]
    pub kernels: Kernels,
    pub panel: Panel,
    pub prompt: String,
    pub chat: bool,
    pub sampling: Sampling,
    pub stack: Vec<StackItem>,
    pub patch: PatchSpec,
    pub lens: LensInputs,
    pub attribution: AttributionInputs,
    pub attention_layer: u32,
    pub attention_head: u32,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            v: STATE_VERSION,
            model: None,
            precision: Precision::F32,
            kernels: Kernels::Auto,
            panel: Panel::Steer,
            prompt: "I think dogs are".into(),
            chat: false,
            sampling: Sampling { max_new_tokens: 24, ..Sampling::default() },
            stack: vec![],
            patch: PatchSpec {
                clean: "When Mary and John went to the store, John gave a drink to".into(),
                corrupt: "When Mary and John went to the store, Mary gave a drink to".into(),
                answer: " Mary".into(),
                wrong: " John".into(),
                family: "resid_pre".into(),
                metric: "logit_diff_norm".into(),
                noising: false,
                noise: None,
                seed: 0,
            },
            lens: LensInputs { target: String::new(), intervened: false },
            attribution: AttributionInputs { answer: " Paris".into(), wrong: String::new(), layer: 0, neuron: 0 },
            attention_layer: 0,
            attention_head: 0,
        }
    }
}

impl Shared {
    /// The intervention document of the enabled stack.
    pub fn document(&self) -> Result<String, String> {
        let mut items = Vec::new();
        for (i, it) in self.stack.iter().enumerate() {
            items.extend(it.to_json().map_err(|e| format!("intervention {}: {e}", i + 1))?);
        }
        Ok(serde_json::to_string(&json!({"version": 1, "interventions": items})).expect("json"))
    }

    pub fn next_item_id(&self) -> u32 {
        self.stack.iter().map(|i| i.id + 1).max().unwrap_or(1)
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("state serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes and validates a link's state; the message says what is wrong.
    pub fn decode(s: &str) -> Result<Shared, String> {
        if s.len() > MAX_LINK_CHARS {
            return Err(format!("the link's state is {} characters; at most {MAX_LINK_CHARS} are accepted", s.len()));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|e| format!("the link's state is not valid base64url ({e})"))?;
        let st: Shared = serde_json::from_slice(&bytes).map_err(|e| format!("the link's state is not valid: {e}"))?;
        st.validate()?;
        Ok(st)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.v != STATE_VERSION {
            return Err(format!("the link's state has version {}; this page reads version {STATE_VERSION}", self.v));
        }
        let texts = [
            ("prompt", &self.prompt),
            ("patch.clean", &self.patch.clean),
            ("patch.corrupt", &self.patch.corrupt),
            ("patch.answer", &self.patch.answer),
            ("patch.wrong", &self.patch.wrong),
            ("lens.target", &self.lens.target),
            ("attribution.answer", &self.attribution.answer),
            ("attribution.wrong", &self.attribution.wrong),
        ];
        for (name, t) in texts {
            if t.len() > MAX_TEXT {
                return Err(format!("field '{name}' has {} characters; at most {MAX_TEXT}", t.len()));
            }
        }
        let s = &self.sampling;
        if s.max_new_tokens == 0 || s.max_new_tokens > 1024 {
            return Err(format!("field 'sampling.max_new_tokens' is {}; it must be 1..=1024", s.max_new_tokens));
        }
        if !(0.0..=5.0).contains(&s.temperature) {
            return Err(format!("field 'sampling.temperature' is {}; it must be 0..=5", s.temperature));
        }
        if let Some(p) = s.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("field 'sampling.top_p' is {p}; it must be in (0, 1]"));
            }
        }
        if self.stack.len() > MAX_ITEMS {
            return Err(format!("the link has {} interventions; at most {MAX_ITEMS}", self.stack.len()));
        }
        for (i, it) in self.stack.iter().enumerate() {
            let n = i + 1;
            if !it.strength.is_finite() {
                return Err(format!("intervention {n}: strength is not a finite number"));
            }
            if it.site.len() > 64 || !it.site.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                return Err(format!("intervention {n}: hook site '{}' is not a hook name", it.site.chars().take(64).collect::<String>()));
            }
            for (name, t) in [("positions", &it.positions), ("heads", &it.heads), ("neurons", &it.neurons), ("json", &it.json)] {
                if t.len() > MAX_TEXT {
                    return Err(format!("intervention {n}: field '{name}' is too long"));
                }
            }
            match &it.vector {
                VectorSpec::PromptPair { plus, minus } if plus.len() > MAX_TEXT || minus.len() > MAX_TEXT => {
                    return Err(format!("intervention {n}: a prompt is too long"));
                }
                VectorSpec::Sets { positive, negative, .. } if positive.len() > MAX_TEXT || negative.len() > MAX_TEXT => {
                    return Err(format!("intervention {n}: a prompt set is too long"));
                }
                VectorSpec::Literal { label, values }
                    if label.len() > 512 || values.len() > MAX_VECTOR || values.iter().any(|x| !x.is_finite()) =>
                {
                    return Err(format!("intervention {n}: the vector is malformed"));
                }
                VectorSpec::Control { directions, .. }
                    if directions.len() > 512
                        || directions.iter().any(|(_, v)| v.len() > MAX_VECTOR || v.iter().any(|x| !x.is_finite())) =>
                {
                    return Err(format!("intervention {n}: the control vector is malformed"));
                }
                _ => {}
            }
        }
        if let Some(src) = &self.model {
            match src {
                ModelSource::Gguf { url } | ModelSource::HfRepo { base: url } => {
                    if url.len() > 2048 {
                        return Err("the model URL is too long".into());
                    }
                    let lower = url.trim().to_ascii_lowercase();
                    let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://") || !lower.contains(':');
                    if !scheme_ok {
                        return Err("the model URL must be http(s) or a path on this site".into());
                    }
                }
                ModelSource::File { .. } => return Err("a link cannot carry a local file; pick the file again".into()),
            }
        }
        Ok(())
    }
}


/// A worked example that loads in one click.
pub struct Preset {
    pub id: &'static str,
    pub title: &'static str,
    pub blurb: &'static str,
    pub state: Shared,
}

/// Prompts for the sentiment direction (also in tests/reference/data).
const POSITIVE: &str = "I loved this movie, it was wonderful.\nThe food at this restaurant is delicious.\nWhat a beautiful and sunny day.\nShe was thrilled with her new job.\nThis book is fantastic and inspiring.";
const NEGATIVE: &str = "I hated this movie, it was awful.\nThe food at this restaurant is disgusting.\nWhat a miserable and rainy day.\nShe was devastated by losing her job.\nThis book is boring and depressing.";

pub fn presets() -> Vec<Preset> {
    let base = Shared::default();
    let love_hate = {
        let mut s = base.clone();
        s.panel = Panel::Steer;
        s.prompt = "I think my neighbour is".into();
        s.sampling.max_new_tokens = 16;
        let mut it = StackItem::new(1, UiOp::Add, 30);
        it.layer = Some(4);
        it.site = "hook_resid_pre".into();
        it.strength = 5.0;
        // Multi-token prompts: a one-token prompt's only position is the
        // attention sink, whose activation swamps the difference.
        it.vector = VectorSpec::PromptPair { plus: "I love you".into(), minus: "I hate you".into() };
        s.stack = vec![it];
        s
    };
    let ioi = {
        let mut s = base.clone();
        s.panel = Panel::Patch;
        s.patch.family = "resid_pre".into();
        s.patch.metric = "logit_diff_norm".into();
        s
    };
    let ablation = {
        let mut s = base.clone();
        s.panel = Panel::Steer;
        s.prompt = "The movie was absolutely".into();
        s.sampling.max_new_tokens = 20;
        let mut it = StackItem::new(1, UiOp::ProjectOut, 30);
        it.layer = None;
        it.site = "hook_resid_post".into();
        // Layer 14: the best leave-one-out separation before the last layers
        // (`scalpel vector --positive … --negative …`).
        it.vector_layer = Some(14);
        it.vector = VectorSpec::Sets { positive: POSITIVE.into(), negative: NEGATIVE.into(), pca: false };
        s.stack = vec![it];
        s
    };
    let lens = {
        let mut s = base.clone();
        s.panel = Panel::Lens;
        s.prompt = "The Eiffel Tower is located in the city of".into();
        s.lens.target = " Paris".into();
        s
    };
    vec![
        Preset { id: "love-hate", title: "\"Love − Hate\" steering", blurb: "ActAdd: add 5 × (act(I love you) − act(I hate you)) at layer 4", state: love_hate },
        Preset { id: "ioi", title: "IOI name-mover patching", blurb: "Which layer and position carry the indirect object?", state: ioi },
        Preset { id: "directional-ablation", title: "Directional ablation", blurb: "Project a sentiment direction (read at layer 14) out of every layer", state: ablation },
        Preset { id: "fact-lens", title: "Logit lens: a fact lookup", blurb: "At which layer does ' Paris' appear?", state: lens },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_document() {
        let mut s = Shared::default();
        s.stack.push(StackItem::new(1, UiOp::Add, 30));
        s.stack.push(StackItem::new(2, UiOp::Zero, 30));
        let back = Shared::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        let doc: Value = serde_json::from_str(&s.document().unwrap()).unwrap();
        assert_eq!(doc["interventions"][0]["op"], "add");
        assert_eq!(doc["interventions"][0]["hook"], "blocks.10.hook_resid_pre", "new items start at n_layers / 3");
        assert_eq!(doc["interventions"][0]["vector"]["from"], "prompt_diff");
        assert_eq!(doc["interventions"][1]["heads"], json!([0]));
    }

    #[test]
    fn hostile_links_are_rejected_with_a_reason() {
        assert!(Shared::decode("%%%").unwrap_err().contains("base64"));
        let b = |j: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(j);
        assert!(Shared::decode(&b("{\"v\":1}")).unwrap_err().contains("not valid"));
        let mut s = Shared::default();
        s.sampling.max_new_tokens = 100_000;
        assert!(Shared::decode(&s.encode()).unwrap_err().contains("max_new_tokens"));
        let mut s = Shared::default();
        s.model = Some(ModelSource::Gguf { url: "javascript:alert(1)".into() });
        assert!(Shared::decode(&s.encode()).unwrap_err().contains("http"));
        let mut s = Shared::default();
        let mut it = StackItem::new(1, UiOp::Add, 30);
        it.site = "<img src=x>".into();
        s.stack.push(it);
        assert!(Shared::decode(&s.encode()).unwrap_err().contains("hook"));
    }

    #[test]
    fn presets_are_valid_and_compile_to_documents() {
        for p in presets() {
            p.state.validate().unwrap();
            let doc = p.state.document().unwrap();
            scalpel_interventions::parse(&doc).unwrap_or_else(|e| panic!("preset {}: {e}", p.id));
        }
    }

    #[test]
    fn positions_syntax() {
        assert_eq!(parse_positions("all").unwrap(), json!("all"));
        assert_eq!(parse_positions("0, -1").unwrap(), json!([0, -1]));
        assert_eq!(parse_positions("2..5").unwrap(), json!({"start": 2, "end": 5}));
        assert!(parse_positions("x").unwrap_err().contains("'x'"));
    }
}
