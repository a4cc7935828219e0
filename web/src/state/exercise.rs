//! Exercises: a link state plus a task, hints and checks. The teacher
//! makes one in the page; the student works in the normal panels and
//! presses "Check": the worker runs what each check needs on the student's
//! state (`worker/exercise.rs`) and each check passes or fails with the
//! value it measured. The checks travel in the link: they are feedback,
//! not a secret.
//!
//! What a check measures is defined here (`Check`), with the parts that
//! need no model (`check_answer`, `check_stack`); the shipped course is
//! `course()`.

use serde::{Deserialize, Serialize};

use super::{Panel, Shared, StackItem, UiOp, VectorSpec};
use crate::protocol::{Metric, PatchResult, PatchSite};

/// Longest title, hint or check string.
const MAX_SHORT: usize = 200;
const MAX_HINTS: usize = 8;
const MAX_CHECKS: usize = 8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exercise {
    /// Names the exercise in the student's progress (kept in localStorage).
    pub id: String,
    pub title: String,
    /// Plain text or a small Markdown subset (paragraphs, `- ` lists,
    /// `**bold**`, `*italic*`, `` `code` ``), shown as text, never as HTML.
    pub task: String,
    #[serde(default)]
    pub hints: Vec<String>,
    /// All must pass.
    pub checks: Vec<Check>,
}

/// What a check measures on the student's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// The next-token distribution right after the prompt, under the
    /// student's interventions (or without them: `baseline`).
    NextToken {
        token: String,
        #[serde(default)]
        top1: bool,
        #[serde(default)]
        min_prob: Option<f32>,
        #[serde(default)]
        max_prob: Option<f32>,
        #[serde(default)]
        baseline: bool,
    },
    /// The text generated with the student's sampling contains / avoids a string.
    Generated {
        #[serde(default)]
        contains: Option<String>,
        #[serde(default)]
        avoids: Option<String>,
        #[serde(default)]
        baseline: bool,
    },
    /// The strongest cell (highest metric) of the student's patching sweep
    /// lies at this layer / position / head (the ones given).
    StrongestCell {
        #[serde(default)]
        layer: Option<u32>,
        #[serde(default)]
        position: Option<u32>,
        #[serde(default)]
        head: Option<u32>,
    },
    /// The student's answer field.
    Answer { expected: Expected },
    /// The intervention stack holds between `min` and `max` enabled items
    /// of this kind (at this layer), each with |strength| ≤ `max_strength`.
    Stack {
        #[serde(default)]
        op: Option<UiOp>,
        #[serde(default)]
        layer: Option<u32>,
        #[serde(default = "one")]
        min: u32,
        #[serde(default)]
        max: Option<u32>,
        #[serde(default)]
        max_strength: Option<f32>,
    },
}

fn one() -> u32 {
    1
}

/// An expected answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expected {
    /// A number, within `tolerance`.
    Number { value: f64, #[serde(default)] tolerance: f64 },
    /// A text, compared without surrounding spaces or case.
    Text { value: String },
    /// An attention head, written `L9H6` (or `L9.H6`, `9.6`).
    Head { layer: u32, head: u32 },
}

/// One check's verdict, as the student sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub pass: bool,
    /// What was asked, in words.
    pub wanted: String,
    /// What was measured on the student's state.
    pub measured: String,
}

impl Check {
    /// What the check asks for, in words.
    pub fn describe(&self) -> String {
        let lane = |b: bool| if b { "without interventions" } else { "with your interventions" };
        match self {
            Check::NextToken { token, top1, min_prob, max_prob, baseline } => {
                let mut parts = Vec::new();
                if *top1 {
                    parts.push("is the most likely next token".to_string());
                }
                if let Some(p) = min_prob {
                    parts.push(format!("has probability ≥ {:.0}%", 100.0 * p));
                }
                if let Some(p) = max_prob {
                    parts.push(format!("has probability ≤ {:.0}%", 100.0 * p));
                }
                format!("{token:?} {} after the prompt, {}", parts.join(" and "), lane(*baseline))
            }
            Check::Generated { contains, avoids, baseline } => {
                let mut parts = Vec::new();
                if let Some(c) = contains {
                    parts.push(format!("contains {c:?}"));
                }
                if let Some(a) = avoids {
                    parts.push(format!("avoids {a:?}"));
                }
                format!("the generated text {} ({})", parts.join(" and "), lane(*baseline))
            }
            Check::StrongestCell { layer, position, head } => {
                let mut at = Vec::new();
                if let Some(l) = layer {
                    at.push(format!("layer {l}"));
                }
                if let Some(h) = head {
                    at.push(format!("head {h}"));
                }
                if let Some(p) = position {
                    at.push(format!("position {p}"));
                }
                format!("your patching sweep's strongest cell is at {}", at.join(", "))
            }
            Check::Answer { expected } => match expected {
                Expected::Number { value, tolerance } if *tolerance > 0.0 => format!("the answer is {value} (± {tolerance})"),
                Expected::Number { value, .. } => format!("the answer is {value}"),
                Expected::Text { .. } => "the answer is right".to_string(),
                Expected::Head { .. } => "the answer names the right head".to_string(),
            },
            Check::Stack { op, layer, min, max, max_strength } => {
                let what = op.map_or("intervention".to_string(), |o| format!("\"{}\" intervention", o.label()));
                let count = match max {
                    Some(m) if m == min => format!("exactly {min}"),
                    Some(m) => format!("{min} to {m}"),
                    None => format!("at least {min}"),
                };
                let mut s = format!("the stack has {count} enabled {what}(s)");
                if let Some(l) = layer {
                    s.push_str(&format!(" at layer {l}"));
                }
                if let Some(m) = max_strength {
                    s.push_str(&format!(", strength at most {m}"));
                }
                s
            }
        }
    }

    /// Whether the worker must run the model for this check.
    pub fn needs_model(&self) -> bool {
        matches!(self, Check::NextToken { .. } | Check::Generated { .. } | Check::StrongestCell { .. })
    }

    fn validate(&self) -> Result<(), String> {
        let short = |what: &str, s: &str| -> Result<(), String> {
            if s.is_empty() || s.len() > MAX_SHORT {
                return Err(format!("{what} must have 1 to {MAX_SHORT} characters"));
            }
            Ok(())
        };
        let prob = |what: &str, p: Option<f32>| -> Result<(), String> {
            match p {
                Some(p) if !(0.0..=1.0).contains(&p) => Err(format!("{what} is {p}; it must be a probability in 0..=1")),
                _ => Ok(()),
            }
        };
        match self {
            Check::NextToken { token, top1, min_prob, max_prob, .. } => {
                short("the next-token check's token", token)?;
                prob("min_prob", *min_prob)?;
                prob("max_prob", *max_prob)?;
                if !top1 && min_prob.is_none() && max_prob.is_none() {
                    return Err("a next-token check needs top1, min_prob or max_prob".into());
                }
            }
            Check::Generated { contains, avoids, .. } => {
                if contains.is_none() && avoids.is_none() {
                    return Err("a generated-text check needs contains or avoids".into());
                }
                for s in [contains, avoids].into_iter().flatten() {
                    short("a generated-text check's string", s)?;
                }
            }
            Check::StrongestCell { layer, position, head } => {
                if layer.is_none() && position.is_none() && head.is_none() {
                    return Err("a strongest-cell check needs a layer, position or head".into());
                }
            }
            Check::Answer { expected } => match expected {
                Expected::Number { value, tolerance } => {
                    if !value.is_finite() || !tolerance.is_finite() || *tolerance < 0.0 {
                        return Err("an answer check's number and tolerance must be finite, the tolerance ≥ 0".into());
                    }
                }
                Expected::Text { value } => short("an answer check's text", value.trim())?,
                Expected::Head { .. } => {}
            },
            Check::Stack { min, max, max_strength, .. } => {
                if max.is_some_and(|m| m < *min) {
                    return Err(format!("a stack check's max {} is below its min {min}", max.unwrap_or(0)));
                }
                if max_strength.is_some_and(|s| !s.is_finite() || s < 0.0) {
                    return Err("a stack check's max_strength must be a finite number ≥ 0".into());
                }
            }
        }
        Ok(())
    }
}

impl Exercise {
    /// Checks the limits a link must keep (lengths, counts, numbers).
    pub fn validate(&self, max_text: usize) -> Result<(), String> {
        let err = |e: String| format!("exercise: {e}");
        if self.id.is_empty() || self.id.len() > 64 || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(err("its id must be 1 to 64 letters, digits, '-' or '_'".into()));
        }
        if self.title.trim().is_empty() || self.title.len() > MAX_SHORT {
            return Err(err(format!("its title must have 1 to {MAX_SHORT} characters")));
        }
        if self.task.len() > max_text {
            return Err(err(format!("its task has {} characters; at most {max_text}", self.task.len())));
        }
        if self.hints.len() > MAX_HINTS || self.hints.iter().any(|h| h.len() > 4 * MAX_SHORT) {
            return Err(err(format!("at most {MAX_HINTS} hints of at most {} characters", 4 * MAX_SHORT)));
        }
        if self.checks.is_empty() || self.checks.len() > MAX_CHECKS {
            return Err(err(format!("it needs 1 to {MAX_CHECKS} checks; it has {}", self.checks.len())));
        }
        for (i, c) in self.checks.iter().enumerate() {
            c.validate().map_err(|e| err(format!("check {}: {e}", i + 1)))?;
        }
        Ok(())
    }

    /// An id from a title: lowercase letters and digits joined by '-'.
    pub fn id_from_title(title: &str) -> String {
        let mut id = String::new();
        for w in title.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
            if !id.is_empty() {
                id.push('-');
            }
            id.push_str(&w.to_ascii_lowercase());
        }
        id.truncate(48);
        let id = id.trim_end_matches('-').to_string();
        if id.is_empty() {
            "exercise".into()
        } else {
            id
        }
    }
}

/// `L9H6`, `L9.H6`, `l9 h6` or `9.6`: (layer, head).
pub fn parse_head(s: &str) -> Option<(u32, u32)> {
    let t: String = s.trim().to_ascii_uppercase().chars().filter(|c| !c.is_whitespace()).collect();
    let t = t.strip_prefix('L').unwrap_or(&t);
    let (l, h) = t.split_once(['H', '.'])?;
    let h = h.strip_prefix('H').unwrap_or(h);
    Some((l.trim_end_matches('.').parse().ok()?, h.parse().ok()?))
}

/// The answer check, on the student's answer field.
pub fn check_answer(expected: &Expected, answer: &str) -> (bool, String) {
    let a = answer.trim();
    if a.is_empty() {
        return (false, "no answer given".into());
    }
    let shown: String = a.chars().take(60).collect();
    match expected {
        Expected::Number { value, tolerance } => match a.replace(',', ".").trim_end_matches('%').trim().parse::<f64>() {
            Ok(x) if x.is_finite() => ((x - value).abs() <= *tolerance, format!("you answered {x}")),
            _ => (false, format!("{shown:?} is not a number")),
        },
        Expected::Text { value } => (a.to_lowercase() == value.trim().to_lowercase(), format!("you answered {shown:?}")),
        Expected::Head { layer, head } => match parse_head(a) {
            Some((l, h)) => ((l, h) == (*layer, *head), format!("you answered L{l}H{h}")),
            None => (false, format!("{shown:?} is not a head (write it like L9H6)")),
        },
    }
}

/// The stack check, on the student's stack.
pub fn check_stack(stack: &[StackItem], op: Option<UiOp>, layer: Option<u32>, min: u32, max: Option<u32>, max_strength: Option<f32>) -> (bool, String) {
    let matching: Vec<&StackItem> = stack.iter().filter(|i| i.enabled && op.is_none_or(|o| i.op == o) && layer.is_none_or(|l| i.layer == Some(l))).collect();
    let n = matching.len() as u32;
    let strongest = matching.iter().filter(|i| matches!(i.op, UiOp::Add | UiOp::Scale)).map(|i| i.strength.abs()).fold(None, |m: Option<f32>, s| Some(m.map_or(s, |m| m.max(s))));
    let count_ok = n >= min && max.is_none_or(|m| n <= m);
    let strength_ok = match (max_strength, strongest) {
        (Some(limit), Some(s)) => s <= limit,
        _ => true,
    };
    let mut measured = format!("{n} matching enabled intervention(s) of {} in the stack", stack.len());
    if let Some(s) = strongest {
        measured.push_str(&format!(", strongest |strength| {s}"));
    }
    (count_ok && strength_ok, measured)
}

/// A sweep's strongest cell, in the sweep's own terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    pub layer: u32,
    pub head: Option<u32>,
    pub position: Option<u32>,
    pub value: f32,
}

/// The cell with the largest effect: the highest value, or the lowest for
/// KL (a patch that restores the clean run brings its KL down). Rows are
/// layers (layer × head for `head_z_pos`), columns positions (heads for
/// `head_z`).
pub fn strongest_cell(r: &PatchResult) -> Option<Cell> {
    let sign = if r.metric == Metric::Kl { -1.0 } else { 1.0 };
    let mut best: Option<(usize, usize, f32)> = None;
    for (i, row) in r.values.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v.is_finite() && best.is_none_or(|(_, _, b)| sign * v > sign * b) {
                best = Some((i, j, v));
            }
        }
    }
    let (row, col, value) = best?;
    let (row, col) = (row as u32, col as u32);
    Some(match r.site {
        PatchSite::HeadZ => Cell { layer: row, head: Some(col), position: None, value },
        PatchSite::HeadZPos => {
            let per = r.heads_per_layer.unwrap_or(1).max(1) as u32;
            Cell { layer: row / per, head: Some(row % per), position: Some(col), value }
        }
        _ => Cell { layer: row, head: None, position: Some(col), value },
    })
}

/// Progress on exercises, by id: kept in the browser's localStorage.
pub const PROGRESS_KEY: &str = "scalpel.progress";

/// The shipped course on the default model, in order: each a whole link
/// state whose exercise builds on the one before. The numbers its checks
/// expect were measured with the CLI on SmolLM2-135M-Instruct in f32
/// (docs/exercises.md gives the commands).
pub fn course() -> Vec<Shared> {
    let base = Shared::default();
    let ex = |id: &str, title: &str, task: &str, hints: &[&str], checks: Vec<Check>| Exercise {
        id: id.into(),
        title: title.into(),
        task: task.into(),
        hints: hints.iter().map(|h| h.to_string()).collect(),
        checks,
    };
    let love_hate = |layer: u32, strength: f32| {
        let mut it = StackItem::new(1, UiOp::Add, 30);
        it.layer = Some(layer);
        it.site = "hook_resid_pre".into();
        it.strength = strength;
        it.vector = VectorSpec::PromptPair { plus: "I love you".into(), minus: "I hate you".into() };
        it
    };
    let ioi_prompt = base.patch.clean.clone();

    let mut s1 = base.clone();
    s1.prompt = "The capital of France is".into();
    s1.sampling.max_new_tokens = 12;
    s1.sampling.temperature = 1.5;
    s1.sampling.seed = 1;
    s1.exercise = Some(ex(
        "course-1-next-token",
        "1. The next token, and sampling",
        "The model reads the prompt and gives a probability to every possible next token. Under **Generate & intervene**, find the list *Next token after the prompt* in the Baseline column.\n\n- Type the most likely next token in the answer box.\n- The generation below is sampled at temperature 1.5 and says nothing about Paris. Change the sampling so that the model always takes its most likely token (greedy decoding), and look at the generation again.",
        &["Tokens often start with a space: ' Paris' is one token.", "Temperature 0 means greedy: always the most likely token."],
        vec![
            Check::Answer { expected: Expected::Text { value: "Paris".into() } },
            Check::Generated { contains: Some(" Paris".into()), avoids: None, baseline: true },
        ],
    ));

    let mut s2 = base.clone();
    s2.prompt = "I think my neighbour is a".into();
    s2.sampling.max_new_tokens = 12;
    s2.exercise = Some(ex(
        "course-2-steering",
        "2. Steering with a prompt pair",
        "Activation addition (ActAdd) steers a model by adding the difference of two prompts' activations to its residual stream.\n\nAdd one **Steer (add a vector)** intervention at layer **2**, hook `hook_resid_pre`, built from the prompt pair *plus* `I love you`, *minus* `I hate you`, at strength **4**. Make ' good' the most likely next token after the prompt.",
        &["Pick \"Steer (add a vector)\" under New, then Add intervention.", "The vector comes from \"prompt pair\": fill in the plus and minus prompts."],
        vec![
            Check::NextToken { token: " good".into(), top1: true, min_prob: None, max_prob: None, baseline: false },
            Check::Stack { op: Some(UiOp::Add), layer: Some(2), min: 1, max: Some(1), max_strength: Some(4.0) },
        ],
    ));

    let mut s3 = base.clone();
    s3.prompt = "I think my neighbour is a".into();
    s3.sampling.max_new_tokens = 12;
    s3.stack = vec![love_hate(2, 4.0)];
    s3.exercise = Some(ex(
        "course-3-steering-layer",
        "3. Where steering works",
        "The same vector does different things at different depths. Keep the love − hate vector at strength 4 (no more), and move it to other layers.\n\nFind a layer where ' friend' gets a probability of at least **40%** as the next token.",
        &["Try the layers in steps of two, and watch the intervened next-token list.", "Early layers change the words, later ones what the model is about to say."],
        vec![
            Check::NextToken { token: " friend".into(), top1: false, min_prob: Some(0.4), max_prob: None, baseline: false },
            Check::Stack { op: Some(UiOp::Add), layer: None, min: 1, max: Some(1), max_strength: Some(4.0) },
        ],
    ));

    let mut s4 = base.clone();
    s4.prompt = ioi_prompt.clone();
    s4.sampling.max_new_tokens = 8;
    s4.exercise = Some(ex(
        "course-4-ablation",
        "4. Zero- or mean-ablation of a head",
        "In this sentence the model predicts ' Mary' (the indirect object). Head **3 of layer 23** helps it.\n\nAblate that head's output (`attn.hook_z`, heads `3`) first with **Set to zero**, then with **Set to mean**, and compare the probability of ' Mary'. Which one lowers it more? Answer `zero` or `mean`, and leave that ablation (only it) in the stack.",
        &["The Heads field appears for per-head hooks such as attn.hook_z.", "Mean-ablation keeps the head's average output; zero-ablation removes even that."],
        vec![
            Check::Answer { expected: Expected::Text { value: "zero".into() } },
            Check::Stack { op: Some(UiOp::Zero), layer: Some(23), min: 1, max: Some(1), max_strength: None },
            Check::NextToken { token: " Mary".into(), top1: false, min_prob: None, max_prob: Some(0.9), baseline: false },
        ],
    ));

    let mut s5 = base.clone();
    s5.panel = Panel::Patch;
    s5.patch.family = PatchSite::ResidPre;
    s5.patch.metric = Metric::LogitDiffNorm;
    s5.exercise = Some(ex(
        "course-5-ioi-patching",
        "5. Patching: which position, which layer",
        "Activation patching copies activations from the clean run into the corrupted one, one layer and position at a time, and measures how much of the clean answer comes back (1 = all of it).\n\nRun the sweep on `hook_resid_pre`. The strongest cells sit at one position. Then look at the **last** position: at which layer does it first restore more than half (0.5)? Type that layer.",
        &["Hover a cell to see its value.", "Before that layer, the information is still at the second ' John'."],
        vec![
            Check::StrongestCell { layer: None, position: Some(9), head: None },
            Check::Answer { expected: Expected::Number { value: 24.0, tolerance: 0.0 } },
        ],
    ));

    let mut s6 = base.clone();
    s6.panel = Panel::Lens;
    s6.prompt = "The Eiffel Tower is located in the city of".into();
    s6.lens.target = " Paris".into();
    s6.exercise = Some(ex(
        "course-6-logit-lens",
        "6. The logit lens: where a fact appears",
        "The logit lens decodes every layer's residual stream as if it were the last.\n\nRun the lens on this prompt with target ' Paris'. At which layer does ' Paris' first become the top token at the last position? Type the layer.",
        &["The grid shows the last layer on top; each cell's top token is written in it.", "The target's rank is in each cell's title."],
        vec![Check::Answer { expected: Expected::Number { value: 27.0, tolerance: 0.0 } }],
    ));
    vec![s1, s2, s3, s4, s5, s6]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_compared_as_a_student_writes_them() {
        let text = Expected::Text { value: "Paris".into() };
        assert!(check_answer(&text, " paris ").0);
        assert!(!check_answer(&text, "London").0);
        assert_eq!(check_answer(&text, "").1, "no answer given");
        let num = Expected::Number { value: 24.0, tolerance: 0.5 };
        assert!(check_answer(&num, "24").0 && check_answer(&num, "24,4").0);
        let (ok, m) = check_answer(&num, "23");
        assert!(!ok && m == "you answered 23");
        assert!(check_answer(&num, "twenty").1.contains("not a number"));
        let head = Expected::Head { layer: 9, head: 6 };
        for a in ["L9H6", "l9 h6", "L9.H6", "9.6"] {
            assert!(check_answer(&head, a).0, "{a}");
        }
        assert!(!check_answer(&head, "L6H9").0);
    }

    #[test]
    fn stack_checks_count_kind_layer_and_strength() {
        let mut a = StackItem::new(1, UiOp::Add, 30);
        a.layer = Some(10);
        a.strength = 4.0;
        let stack = vec![a.clone()];
        assert!(check_stack(&stack, Some(UiOp::Add), None, 1, Some(1), Some(4.0)).0);
        assert!(!check_stack(&stack, Some(UiOp::Add), None, 1, Some(1), Some(3.0)).0);
        assert!(!check_stack(&stack, Some(UiOp::Zero), None, 1, None, None).0);
        assert!(!check_stack(&stack, Some(UiOp::Add), Some(2), 1, None, None).0);
        let mut off = a.clone();
        off.enabled = false;
        assert!(!check_stack(&[off], Some(UiOp::Add), None, 1, None, None).0);
        assert!(!check_stack(&[a.clone(), a], Some(UiOp::Add), None, 1, Some(1), None).0);
    }

    #[test]
    fn the_course_is_valid_and_each_exercise_has_a_unique_id() {
        let course = course();
        assert!(course.len() >= 6);
        let mut ids = std::collections::HashSet::new();
        for s in &course {
            s.validate().unwrap();
            let e = s.exercise.as_ref().unwrap();
            assert!(ids.insert(e.id.clone()));
        }
    }

    #[test]
    fn hostile_exercises_are_refused_with_a_reason() {
        let mut s = course().remove(0);
        let e = s.exercise.as_mut().unwrap();
        e.checks.clear();
        assert!(s.validate().unwrap_err().contains("1 to 8 checks"));
        let mut s = course().remove(0);
        s.exercise.as_mut().unwrap().id = "<script>".into();
        assert!(s.validate().unwrap_err().contains("id"));
        let mut s = course().remove(0);
        s.exercise.as_mut().unwrap().checks = vec![Check::NextToken { token: " a".into(), top1: false, min_prob: Some(7.0), max_prob: None, baseline: false }];
        assert!(s.validate().unwrap_err().contains("probability"));
        let json = r#"{"id":"x","title":"t","task":"","checks":[{"kind":"run_shell","cmd":"rm"}]}"#;
        assert!(serde_json::from_str::<Exercise>(json).is_err());
        assert_eq!(Exercise::id_from_title("IOI: which layer?"), "ioi-which-layer");
        assert_eq!(Exercise::id_from_title("!!!"), "exercise");
    }
}
