//! What the reader of an embedded figure may change: the author picks
//! controls in the link (`?embed=1&controls=prompt,strength`), and the
//! figure shows those and nothing else of the page's chrome. Everything
//! else the reader sees is the link's state, read-only.

/// The controls an embed can offer, by their name in `controls=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EmbedControls {
    /// The open panel's inputs: its prompt(s) and run/stop.
    pub prompt: bool,
    /// A strength slider for each steering or scaling intervention.
    pub strength: bool,
    /// Sampling: new tokens, temperature, top-k, top-p, seed.
    pub sampling: bool,
    /// The whole intervention stack, editable.
    pub stack: bool,
}

/// Each control's name in the link and what it offers the reader.
pub const CONTROLS: [(&str, &str); 4] = [
    ("prompt", "the prompt and run / stop"),
    ("strength", "a strength slider per steering intervention"),
    ("sampling", "sampling settings"),
    ("stack", "the whole intervention stack"),
];

/// Longest `controls=` value read (every name once, with commas, fits).
const MAX_PARAM: usize = 64;

impl EmbedControls {
    /// From the `controls=` query value: names separated by commas, in any
    /// order; an unknown name is an error naming it and the known ones.
    pub fn parse(value: &str) -> Result<EmbedControls, String> {
        if value.len() > MAX_PARAM {
            return Err(format!("the link's controls= is {} characters long; it lists at most {} names ({})", value.len(), CONTROLS.len(), names()));
        }
        let mut c = EmbedControls::default();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let flag = match name {
                "prompt" => &mut c.prompt,
                "strength" => &mut c.strength,
                "sampling" => &mut c.sampling,
                "stack" => &mut c.stack,
                other => {
                    let shown: String = other.chars().take(24).collect();
                    return Err(format!("the link asks for an embed control '{shown}' that does not exist (controls: {})", names()));
                }
            };
            *flag = true;
        }
        Ok(c)
    }

    /// The `controls=` value (empty when none).
    pub fn to_param(self) -> String {
        let on = [self.prompt, self.strength, self.sampling, self.stack];
        CONTROLS.iter().zip(on).filter(|(_, on)| *on).map(|((n, _), _)| *n).collect::<Vec<_>>().join(",")
    }

    pub fn get(self, name: &str) -> bool {
        match name {
            "prompt" => self.prompt,
            "strength" => self.strength,
            "sampling" => self.sampling,
            "stack" => self.stack,
            _ => false,
        }
    }

    pub fn set(&mut self, name: &str, on: bool) {
        match name {
            "prompt" => self.prompt = on,
            "strength" => self.strength = on,
            "sampling" => self.sampling = on,
            "stack" => self.stack = on,
            _ => {}
        }
    }

    pub fn any(self) -> bool {
        self.prompt || self.strength || self.sampling || self.stack
    }
}

fn names() -> String {
    CONTROLS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_back() {
        let c = EmbedControls::parse("strength, prompt").unwrap();
        assert_eq!(c, EmbedControls { prompt: true, strength: true, ..Default::default() });
        assert_eq!(c.to_param(), "prompt,strength");
        assert_eq!(EmbedControls::parse(&c.to_param()).unwrap(), c);
        assert_eq!(EmbedControls::parse("").unwrap(), EmbedControls::default());
        assert_eq!(EmbedControls::parse("prompt,,prompt").unwrap().to_param(), "prompt");
        let all = EmbedControls::parse("stack,sampling,strength,prompt").unwrap();
        assert!(all.any() && CONTROLS.iter().all(|(n, _)| all.get(n)));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let e = EmbedControls::parse("prompt,layers").unwrap_err();
        assert!(e.contains("'layers'") && e.contains("prompt, strength, sampling, stack"), "{e}");
        let e = EmbedControls::parse(&"x".repeat(5000)).unwrap_err();
        assert!(e.contains("5000 characters") && e.len() < 200, "{e}");
        let e = EmbedControls::parse("<script>alert(1)</script>").unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
