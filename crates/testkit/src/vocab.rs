//! A GPT-2 byte-level BPE vocabulary (256 byte tokens, 6 merges, 3 control
//! tokens) as GGUF metadata arrays and as a `tokenizer.json`.

use serde_json::json;

/// GPT-2's `bytes_to_unicode`: every byte to a printable char.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = ['\0'; 256];
    for (b, c) in bs.iter().zip(&cs) {
        out[*b as usize] = char::from_u32(*c).unwrap();
    }
    out
}

pub const MERGES: [&str; 6] = ["Ġ t", "h e", "i n", "Ġt he", "e r", "Ġ a"];
pub const ENDOFTEXT: u32 = 262;
pub const IM_START: u32 = 263;
pub const IM_END: u32 = 264;
pub const VOCAB: usize = 265;
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// (tokens, token types) : 256 byte tokens (id = byte value), 6 merged tokens,
/// 3 control tokens.
pub fn vocab() -> (Vec<String>, Vec<i32>) {
    let b2u = bytes_to_unicode();
    let mut toks: Vec<String> = b2u.iter().map(|c| c.to_string()).collect();
    for m in MERGES {
        toks.push(m.replace(' ', ""));
    }
    toks.push("<|endoftext|>".into());
    toks.push("<|im_start|>".into());
    toks.push("<|im_end|>".into());
    assert_eq!(toks.len(), VOCAB);
    let mut types = vec![1i32; VOCAB];
    for t in &mut types[ENDOFTEXT as usize..] {
        *t = 3;
    }
    (toks, types)
}

/// A minimal GPT-2 style `tokenizer.json` over the same byte-level vocabulary.
pub fn tokenizer_json() -> Vec<u8> {
    let (toks, types) = vocab();
    let mut vocab = serde_json::Map::new();
    for (i, t) in toks.iter().enumerate() {
        vocab.insert(t.clone(), json!(i));
    }
    let added: Vec<_> = toks
        .iter()
        .enumerate()
        .filter(|(i, _)| types[*i] == 3)
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": MERGES},
    });
    serde_json::to_vec(&spec).unwrap()
}

