//! The model's own tokenizer, built with the `tokenizers` crate from GGUF
//! metadata or loaded from a Hugging Face `tokenizer.json`, plus the chat
//! template rendered with minijinja.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::error::{Error, Result};
use crate::load::gguf::{Gguf, Value};

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Prepend BOS when encoding (GGUF `tokenizer.ggml.add_bos_token`).
    add_bos: bool,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    pub chat_template: Option<String>,
    pub warnings: Vec<String>,
}

/// Llama 3's pre-tokenization regex (llama.cpp pre-tokenizer 'llama-bpe').
/// Qwen2's (llama.cpp pre-tokenizer 'qwen2'): Llama 3's with one digit a piece.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        let file = &g.file;
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::load(file, "no tokenizer in this GGUF (missing 'tokenizer.ggml.model')"))?;
        let spm = match model {
            "gpt2" => false,
            // SentencePiece (Llama 2, TinyLlama, Gemma): pieces with scores.
            "llama" => true,
            _ => {
                return Err(Error::load(
                    file,
                    format!("tokenizer model '{model}' is not supported (supported: 'gpt2' byte-level BPE, 'llama' SentencePiece)"),
                ))
            }
        };
        let strings = |key: &str| -> Result<Vec<&str>> {
            let arr = g
                .require(key)?
                .as_array()
                .ok_or_else(|| Error::load(file, format!("'{key}' is not an array")))?;
            arr.iter()
                .map(|v| v.as_str().ok_or_else(|| Error::load(file, format!("'{key}' holds a non-string"))))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = match g.get("tokenizer.ggml.merges") {
            Some(_) => strings("tokenizer.ggml.merges")?,
            None => Vec::new(),
        };
        let types: Vec<u64> = match g.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::load(
                file,
                format!("tokenizer.ggml.token_type has {} entries for {} tokens", types.len(), tokens.len()),
            ));
        }
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
            vocab.insert((*tok).to_owned(), json!(id));
            // 3 = control (<|im_start|>...), 4 = user-defined: matched whole.
            if *ty == 3 || *ty == 4 {
                added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": *ty == 3}));
            }
        }
        let (pre_tokenizer, warnings) = if spm { (serde_json::Value::Null, Vec::new()) } else { gguf_pre_tokenizer(g) };
        let spec = if spm {
            spm_spec(g, &tokens, &types, vocab, added)?
        } else {
            json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges},
            })
        };
        let inner = tokenizers::Tokenizer::from_bytes(spec.to_string().as_bytes())
            .map_err(|e| Error::load(file, format!("cannot build the tokenizer from GGUF metadata: {e}")))?;
        let id = |k: &str| {
            g.get(k).and_then(|v| v.as_u64()).filter(|&v| v < tokens.len() as u64).map(|v| v as u32)
        };
        let bos_id = id("tokenizer.ggml.bos_token_id");
        let add_bos = g.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false) && bos_id.is_some();
        let mut eos_ids: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        if let Some(e) = id("tokenizer.ggml.eot_token_id") {
            eos_ids.push(e);
        }
        Ok(Tokenizer {
            inner,
            add_bos,
            bos_id,
            eos_ids,
            chat_template: g.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_owned),
            warnings,
        })
    }

    /// From a Hugging Face `tokenizer.json` (plus optional
    /// `tokenizer_config.json` for the chat template and special tokens).
    pub fn from_hf_json(file: &str, json: &[u8], tokenizer_config: Option<&[u8]>) -> Result<Tokenizer> {
        check_tokenizer_json(file, json)?;
        let inner = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| Error::load(file, format!("not a valid tokenizer.json: {e}")))?;
        let cfg: serde_json::Value = match tokenizer_config {
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| Error::load("tokenizer_config.json", format!("not valid JSON: {e}")))?,
            None => serde_json::Value::Null,
        };
        let token_of = |key: &str| -> Option<u32> {
            let v = cfg.get(key)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            inner.token_to_id(s)
        };
        let mut eos_ids: Vec<u32> = token_of("eos_token").into_iter().collect();
        for name in ["<|endoftext|>", "</s>", "<|im_end|>", "<|eot_id|>"] {
            if eos_ids.is_empty() {
                eos_ids.extend(inner.token_to_id(name));
            }
        }
        Ok(Tokenizer {
            // tokenizer.json's own post-processor decides about BOS.
            add_bos: false,
            bos_id: token_of("bos_token"),
            eos_ids,
            chat_template: cfg.get("chat_template").and_then(|c| c.as_str()).map(str::to_owned),
            inner,
            warnings: Vec::new(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Text to ids, as the model's own tokenizer does it (BOS only if the
    /// model asks for it; special tokens in the text are matched whole).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::input(format!("cannot tokenize the prompt: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Ids to text, special tokens included (they are part of what the model saw).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// Each id decoded on its own (TransformerLens's `to_str_tokens`).
    pub fn token_strings(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&id| self.decode(&[id])).collect()
    }

    /// The text each id adds when decoded after the ids before it: a
    /// multi-byte character split over several byte tokens appears whole on
    /// the token that completes it (the others add ""), where
    /// `token_strings` shows replacement characters. For displaying text.
    pub fn text_pieces(&self, ids: &[u32]) -> Vec<String> {
        // Text whose characters are complete: a byte token that starts a
        // character decodes to U+FFFD until the token that completes it.
        let mut done = String::new();
        (0..ids.len())
            .map(|i| {
                let text = self.decode(&ids[..=i]);
                let complete = text.trim_end_matches('\u{FFFD}');
                let piece = complete.strip_prefix(done.as_str()).map(str::to_string).unwrap_or_else(|| self.decode(&ids[i..=i]));
                done = complete.to_string();
                piece
            })
            .collect()
    }

    /// The raw vocabulary entry for an id (e.g. "Ġthe").
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Renders the model's chat template for `(role, content)` messages.
    /// Templates come from model files: their length, their work (fuel)
    /// and what they write ([`MAX_TEMPLATE_OUTPUT`]) are bounded.
    pub fn apply_chat_template(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::input("this model has no chat template; use plain prompts"))?;
        if template.len() > MAX_TEMPLATE_LEN {
            return Err(Error::input(format!(
                "the model's chat template is {} bytes; at most {MAX_TEMPLATE_LEN} are accepted",
                template.len()
            )));
        }
        let mut env = minijinja::Environment::new();
        // Templates come from model files: bound their work so a hostile one cannot hang us.
        env.set_fuel(Some(2_000_000));
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        // minijinja's namespaces are reference-counted and mutable, so
        // `{% set ns.me = ns %}` makes a cycle that outlives the render:
        // every namespace is kept here and emptied afterwards.
        let namespaces = Arc::new(Mutex::new(Vec::new()));
        let created = namespaces.clone();
        env.add_function("namespace", move |defaults: Option<minijinja::Value>| {
            let ns = minijinja::functions::namespace(defaults)?;
            created.lock().unwrap_or_else(|e| e.into_inner()).push(ns.clone());
            Ok(ns)
        });
        let rendered = render_chat(env, template, messages, add_generation_prompt, self);
        let namespaces = std::mem::take(&mut *namespaces.lock().unwrap_or_else(|e| e.into_inner()));
        break_namespace_cycles(namespaces);
        let out = rendered?;
        String::from_utf8(out).map_err(|_| Error::input("the chat template's output is not valid UTF-8"))
    }
}

/// Renders the chat template `template` in `env`: the output bytes, at most
/// [`MAX_TEMPLATE_OUTPUT`].
fn render_chat<'a>(
    mut env: minijinja::Environment<'a>,
    template: &'a str,
    messages: &[(&str, &str)],
    add_generation_prompt: bool,
    tokenizer: &Tokenizer,
) -> Result<Vec<u8>> {
    env.add_template("chat", template)
        .map_err(|e| Error::input(format!("the model's chat template does not parse: {e}")))?;
    let msgs: Vec<_> = messages.iter().map(|(r, c)| json!({"role": r, "content": c})).collect();
    let tok = |id: Option<u32>| id.and_then(|i| tokenizer.inner.id_to_token(i)).unwrap_or_default();
    let mut out = CappedWriter { buf: Vec::new(), cap: MAX_TEMPLATE_OUTPUT };
    env.get_template("chat")
        .and_then(|t| {
            t.render_captured_to(
                minijinja::context! {
                    messages => msgs,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => tok(tokenizer.bos_id),
                    eos_token => tok(tokenizer.eos_ids.first().copied()),
                },
                &mut out,
            )
            .map(|_| ())
        })
        .map_err(|e| match out.buf.len() >= MAX_TEMPLATE_OUTPUT {
            true => Error::input(format!(
                "the chat template's output exceeds {MAX_TEMPLATE_OUTPUT} bytes (is it repeating the prompt?)"
            )),
            false => Error::input(format!("cannot render the chat template: {e}")),
        })?;
    Ok(out.buf)
}

/// Empties every attribute a template could have assigned (`{% set ns.x =
/// … %}` takes a name, so only identifier keys), dropping the references
/// that could close a cycle through the namespaces. Runs without fuel: its
/// work is the number of assignments the render made, which fuel bounded.
fn break_namespace_cycles(namespaces: Vec<minijinja::Value>) {
    let is_identifier = |k: &str| {
        k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    for ns in namespaces {
        let Ok(keys) = ns.try_iter() else { continue };
        let clear: String = keys
            .filter_map(|k| k.as_str().filter(|k| is_identifier(k)).map(|k| format!("{{% set ns.{k} = none %}}")))
            .collect();
        if clear.is_empty() {
            continue;
        }
        let env = minijinja::Environment::new();
        // Only fails if minijinja changes its syntax; then the cycle leaks, as before.
        let _ = env.render_str(&clear, minijinja::context! { ns => ns });
    }
}

/// Refuses, with a message, the `tokenizer.json` files on which the
/// `tokenizers` crate panics instead of returning an error (found by
/// fuzzing; fuzz/regressions/tokenizer_json/): JSON with a syntax error
/// inside `decoder` (it `expect`s the decoder to deserialize), and a
/// `Precompiled` normalizer whose fields do not deserialize.
fn check_tokenizer_json(file: &str, json: &[u8]) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| Error::load(file, format!("not a valid tokenizer.json: not valid JSON: {e}")))?;
    let mut normalizers: Vec<&serde_json::Value> = v.get("normalizer").into_iter().collect();
    while let Some(n) = normalizers.pop() {
        normalizers.extend(n.get("normalizers").and_then(|a| a.as_array()).into_iter().flatten());
        if n.get("type").and_then(|t| t.as_str()) == Some("Precompiled") {
            serde_json::from_value::<tokenizers::normalizers::precompiled::Precompiled>(n.clone())
                .map_err(|e| Error::load(file, format!("not a valid tokenizer.json: its Precompiled normalizer: {e}")))?;
        }
    }
    Ok(())
}

/// Longest chat template accepted (real ones are a few KB).
pub const MAX_TEMPLATE_LEN: usize = 256 * 1024;
/// Most bytes a rendered chat template may write (the prompt itself is at
/// most tens of KB; a template that repeats it is refused, not rendered).
pub const MAX_TEMPLATE_OUTPUT: usize = 1 << 20;

/// A writer that fails once `cap` bytes have been written.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            self.buf.extend_from_slice(&b[..self.cap - self.buf.len()]);
            return Err(std::io::Error::other("output cap reached"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A SentencePiece vocabulary (`tokenizer.ggml.model = llama`) as a
/// `tokenizers` BPE, the way transformers converts SentencePiece models:
/// every pair of pieces whose concatenation is a piece is a merge, ranked
/// by that piece's score (highest first), so merging the lowest rank first
/// is SentencePiece's "merge the highest-scoring pair"; bytes of characters
/// outside the vocabulary fall back to the `<0xNN>` pieces; spaces are
/// `▁`, with one prepended when `tokenizer.ggml.add_space_prefix` (default
/// true, as llama.cpp reads it) says so.
fn spm_spec(g: &Gguf, tokens: &[&str], types: &[u64], vocab: serde_json::Map<String, serde_json::Value>, added: Vec<serde_json::Value>) -> Result<serde_json::Value> {
    let file = &g.file;
    let scores: Vec<f64> = g
        .require("tokenizer.ggml.scores")?
        .as_array()
        .ok_or_else(|| Error::load(file, "'tokenizer.ggml.scores' is not an array"))?
        .iter()
        .map(|v| v.as_f64().filter(|f| !f.is_nan()).ok_or_else(|| Error::load(file, "'tokenizer.ggml.scores' holds a value that is not a number")))
        .collect::<Result<_>>()?;
    if scores.len() != tokens.len() {
        return Err(Error::load(file, format!("tokenizer.ggml.scores has {} entries for {} tokens", scores.len(), tokens.len())));
    }
    let id_of: std::collections::HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    // (left id, right id, score of the merged piece), in transformers' order:
    // pieces by id, splits by (left id, right id), then stably by score.
    let mut merges: Vec<(usize, usize, f64)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        // Only normal pieces are made by merging (types: 1 normal, 2 unknown,
        // 3 control, 4 user-defined, 5 unused, 6 byte).
        if types[id] != 1 {
            continue;
        }
        let mut local: Vec<(usize, usize, f64)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| Some((*id_of.get(&piece[..at])?, *id_of.get(&piece[at..])?, scores[id])))
            .collect();
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    let merges: Vec<serde_json::Value> = merges.into_iter().map(|(l, r, _)| json!([tokens[l], tokens[r]])).collect();
    let unk = types.iter().position(|&t| t == 2).map(|i| tokens[i]);
    let prefix = g.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()).unwrap_or(true);
    let mut normalizers = Vec::new();
    if prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        // Generated text keeps its leading space (it continues a prompt).
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"}
        ]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    }))
}

/// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names (GPT-2's, with a
/// warning, for names Scalpel does not know).
fn gguf_pre_tokenizer(g: &Gguf) -> (serde_json::Value, Vec<String>) {
    let file = &g.file;
    let mut warnings = Vec::new();
    let pre = g.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    let add_prefix_space =
        g.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()).unwrap_or(false);
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space,
        "trim_offsets": false, "use_regex": true});
    let pre_tokenizer = match pre {
        "default" | "gpt2" | "gpt-2" => byte_level,
        // SmolLM / StarCoder: every digit its own piece, then GPT-2 byte-level.
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        "llama3" | "llama-bpe" | "llama-v3" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}),
        other => {
            warnings.push(format!(
                "{file}: pre-tokenizer '{other}' is not known to Scalpel; using GPT-2's. Token ids may differ from the model's own tokenizer."
            ));
            byte_level
        }
    };
    (pre_tokenizer, warnings)
}
