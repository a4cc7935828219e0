//! The page's shareable state: everything a link reproduces (model source,
//! prompts, sampling, interventions, open panel). It lives in the URL
//! fragment as base64url JSON (`#s=…`), is validated on the way in, and
//! turns into an intervention document (docs/interventions.md) for the worker.

pub mod catalogue;
mod embed;
pub mod exercise;
mod presets;
mod stack;

pub use embed::{EmbedControls, CONTROLS};
pub use exercise::{Check, CheckOutcome, Exercise};
pub use presets::{presets, Preset};
pub use stack::{lines, parse_positions, StackItem, UiOp, VectorSpec};

use crate::protocol::{DictLocation, GenerateOptions, Kernels, Metric, ModelLocation, PatchSite, PatchSpec, Precision};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const STATE_VERSION: u32 = 1;
/// Longest link state accepted (characters of the encoded fragment).
pub const MAX_LINK_CHARS: usize = 400_000;
/// Longest text field (prompts, answers, prompt sets).
pub const MAX_TEXT: usize = 20_000;
/// Most interventions in the stack.
pub const MAX_ITEMS: usize = 32;
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
    Features,
}

impl Panel {
    pub const ALL: [Panel; 6] = [Panel::Steer, Panel::Patch, Panel::Lens, Panel::Attention, Panel::Attribution, Panel::Features];
    pub fn title(self) -> &'static str {
        match self {
            Panel::Steer => "Generate & intervene",
            Panel::Patch => "Activation patching",
            Panel::Lens => "Logit lens",
            Panel::Attention => "Attention",
            Panel::Attribution => "Logit attribution & neurons",
            Panel::Features => "Features (SAEs)",
        }
    }
    pub fn id(self) -> &'static str {
        match self {
            Panel::Steer => "steer",
            Panel::Patch => "patch",
            Panel::Lens => "lens",
            Panel::Attention => "attention",
            Panel::Attribution => "attribution",
            Panel::Features => "features",
        }
    }
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

/// The Features panel's inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesInputs {
    /// The dictionary (a folder URL: picked files cannot travel in a link).
    /// Stack items that name its latents need it loaded.
    pub dict: Option<DictLocation>,
    /// Latents listed per position.
    pub top_k: u32,
    /// The latent whose dashboard is open.
    pub latent: Option<u32>,
    /// The token a latent search looks up.
    pub search: String,
}

impl Default for FeaturesInputs {
    fn default() -> Self {
        FeaturesInputs { dict: None, top_k: 5, latent: None, search: String::new() }
    }
}

/// Most latents a link may name (the largest published dictionaries have ~1M).
const MAX_LATENT: u32 = 1 << 24;

/// Checks a URL a link carries (a model or a dictionary): http(s) or a
/// path on this site, and nothing a URL parser would read as another site.
fn check_url(what: &str, url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err(format!("the {what} URL is too long"));
    }
    // URL parsers drop tabs and newlines anywhere (`/\t/host` is `//host`).
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("the {what} URL contains spaces or control characters"));
    }
    let lower = url.to_ascii_lowercase();
    let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://") || !lower.contains(':');
    if !scheme_ok {
        return Err(format!("the {what} URL must be http(s) or a path on this site"));
    }
    // Browsers read `//host/x` (and `/\host`, `\\host`) as another site, not a path here.
    if lower.starts_with("//") || lower.starts_with("/\\") || lower.starts_with('\\') {
        return Err(format!("the {what} URL is protocol-relative (//host/…), which names another site; write https://host/… instead"));
    }
    Ok(())
}

/// Everything a link carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shared {
    pub v: u32,
    /// None: the default model.
    pub model: Option<ModelLocation>,
    pub precision: Precision,
    #[serde(default)]
    pub kernels: Kernels,
    pub panel: Panel,
    pub prompt: String,
    pub chat: bool,
    pub sampling: GenerateOptions,
    pub stack: Vec<StackItem>,
    pub patch: PatchSpec,
    pub lens: LensInputs,
    pub attribution: AttributionInputs,
    pub attention_layer: u32,
    pub attention_head: u32,
    /// An exercise the link poses (`exercise.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exercise: Option<Exercise>,
    /// The student's answer to it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answer: String,
    #[serde(default)]
    pub features: FeaturesInputs,
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
            sampling: GenerateOptions { max_new_tokens: 24, ..GenerateOptions::default() },
            stack: vec![],
            patch: PatchSpec {
                clean: "When Mary and John went to the store, John gave a drink to".into(),
                corrupt: "When Mary and John went to the store, Mary gave a drink to".into(),
                answer: " Mary".into(),
                wrong: " John".into(),
                family: PatchSite::ResidPre,
                metric: Metric::LogitDiffNorm,
                noising: false,
                noise: None,
                seed: 0,
            },
            lens: LensInputs { target: String::new(), intervened: false },
            attribution: AttributionInputs { answer: " Paris".into(), wrong: String::new(), layer: 0, neuron: 0 },
            attention_layer: 0,
            attention_head: 0,
            exercise: None,
            answer: String::new(),
            features: FeaturesInputs::default(),
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
        Ok(json!({"version": scalpel_types::VERSION, "interventions": items}).to_string())
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
            ("answer", &self.answer),
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
                ModelLocation::Gguf { url } | ModelLocation::HfRepo { base: url } => check_url("model", url)?,
                ModelLocation::File { .. } => return Err("a link cannot carry a local file; pick the file again".into()),
            }
        }
        let f = &self.features;
        match &f.dict {
            None => {}
            Some(DictLocation::Url { base, hook }) => {
                check_url("dictionary", base)?;
                if let Some(h) = hook {
                    if h.len() > 128 || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                        return Err("field 'features.dict.hook' is not a hook name".into());
                    }
                }
            }
            Some(DictLocation::Files { .. }) => return Err("a link cannot carry picked dictionary files; pick them again".into()),
        }
        if f.top_k == 0 || f.top_k > 64 {
            return Err(format!("field 'features.top_k' is {}; it must be 1..=64", f.top_k));
        }
        if f.latent.is_some_and(|l| l >= MAX_LATENT) || f.search.len() > 200 {
            return Err("field 'features' names a latent or search out of range".into());
        }
        for (i, it) in self.stack.iter().enumerate() {
            if let VectorSpec::SaeLatent { latent } = it.vector {
                if latent >= MAX_LATENT {
                    return Err(format!("intervention {}: latent {latent} is out of range", i + 1));
                }
            }
        }
        if let Some(e) = &self.exercise {
            e.validate(MAX_TEXT)?;
        }
        Ok(())
    }
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
        let doc: serde_json::Value = serde_json::from_str(&s.document().unwrap()).unwrap();
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
        let s = Shared { model: Some(ModelLocation::Gguf { url: "javascript:alert(1)".into() }), ..Default::default() };
        assert!(Shared::decode(&s.encode()).unwrap_err().contains("http"));
        for url in ["//evil.example/x.gguf", "/\\evil.example/x.gguf", "\\\\evil.example/x.gguf", "/\t/evil.example/x.gguf"] {
            let s = Shared { model: Some(ModelLocation::HfRepo { base: url.into() }), ..Default::default() };
            assert!(Shared::decode(&s.encode()).unwrap_err().contains("the model URL"), "{url}");
        }
        let s = Shared { model: Some(ModelLocation::Gguf { url: "models/x.gguf".into() }), ..Default::default() };
        assert!(Shared::decode(&s.encode()).is_ok(), "a path on this site is fine");
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
    fn dictionary_latents_become_sae_documents_and_hostile_dictionary_links_are_refused() {
        let mut s = Shared::default();
        let mut steer = StackItem::new(1, UiOp::Add, 30);
        (steer.layer, steer.site, steer.vector, steer.strength) = (Some(6), "hook_mlp_out".into(), VectorSpec::SaeLatent { latent: 123 }, 8.0);
        let mut clamp = StackItem::new(2, UiOp::SaeClamp, 30);
        (clamp.layer, clamp.vector, clamp.strength) = (Some(6), VectorSpec::SaeLatent { latent: 7 }, 0.0);
        s.stack = vec![steer, clamp];
        s.features.dict = Some(crate::protocol::default_dictionary(6));
        s.features.latent = Some(123);
        assert_eq!(Shared::decode(&s.encode()).unwrap(), s);
        let doc = s.document().unwrap();
        scalpel_interventions::parse(&doc).unwrap();
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["interventions"][0], json!({"hook": "blocks.6.hook_mlp_out", "op": "add", "vector": {"from": "sae", "latent": 123}, "scale": 8.0, "positions": "all"}));
        assert_eq!(v["interventions"][1], json!({"hook": "blocks.6.hook_mlp_out", "op": "sae_clamp", "latent": 7, "value": 0.0, "positions": "all"}));

        let with = |d: DictLocation| Shared { features: FeaturesInputs { dict: Some(d), ..Default::default() }, ..Default::default() };
        for base in ["javascript:alert(1)", "//evil.example/sae/", "/\\evil.example/", "a\tb"] {
            let e = Shared::decode(&with(DictLocation::Url { base: base.into(), hook: None }).encode()).unwrap_err();
            assert!(e.contains("the dictionary URL"), "{base}: {e}");
        }
        let e = Shared::decode(&with(DictLocation::Url { base: "models/x/".into(), hook: Some("<script>".into()) }).encode()).unwrap_err();
        assert!(e.contains("hook"), "{e}");
        let e = Shared::decode(&with(DictLocation::Files { folder: "x".into(), names: vec![], hook: None }).encode()).unwrap_err();
        assert!(e.contains("picked dictionary files"), "{e}");
        let mut s = Shared::default();
        s.features.top_k = 0;
        assert!(Shared::decode(&s.encode()).unwrap_err().contains("features.top_k"));
        s.features.top_k = 5;
        s.features.latent = Some(u32::MAX);
        assert!(Shared::decode(&s.encode()).unwrap_err().contains("features"));
        // Links from before the Features panel still open.
        let mut old: serde_json::Value = serde_json::to_value(Shared::default()).unwrap();
        old.as_object_mut().unwrap().remove("features");
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(old.to_string());
        assert_eq!(Shared::decode(&b).unwrap().features, FeaturesInputs::default());
    }

    #[test]
    fn positions_syntax() {
        let json_of = |s: &str| serde_json::to_value(parse_positions(s).unwrap()).unwrap();
        assert_eq!(json_of("all"), json!("all"));
        assert_eq!(json_of("0, -1"), json!([0, -1]));
        assert_eq!(json_of("2..5"), json!({"start": 2, "end": 5}));
        assert!(parse_positions("x").unwrap_err().contains("'x'"));
    }
}
