//! Python literals and the part of the scripts both targets share: the
//! interventions as data (`IV`) and `runtime.py`, which applies one
//! intervention to a hook's tensor exactly as Scalpel does (a mask over
//! positions × heads × units, then a blend).

use std::fmt::Write;

use crate::plan::{Plan, Pos, Step, StepOp};
use crate::{ModelSpec, ScriptOptions};

/// The shared Python runtime (kept as a real .py file so it can be read and linted).
pub const RUNTIME: &str = include_str!("runtime.py");

/// A JSON string is a valid Python string literal.
pub fn s(x: &str) -> String {
    serde_json::to_string(x).expect("a string serializes")
}

/// Shortest round-trip decimal; Python reads Rust's f32 `Debug` form (`1.0`, `1e-8`).
pub fn f(x: f32) -> String {
    format!("{x:?}")
}

fn floats(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| f(*x)).collect();
    format!("[{}]", items.join(", "))
}

fn ints<T: std::fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn opt<T>(v: &Option<T>, show: impl Fn(&T) -> String) -> String {
    v.as_ref().map(show).unwrap_or_else(|| "None".into())
}

pub fn pos(p: &Pos) -> String {
    match p {
        Pos::All => "(\"all\",)".into(),
        Pos::Prompt => "(\"prompt\",)".into(),
        Pos::Generated => "(\"generated\",)".into(),
        Pos::List(v) => format!("(\"list\", {})", ints(v)),
        Pos::Range(a, b) => format!("(\"range\", {a}, {b})"),
    }
}

fn step(st: &Step) -> String {
    let mut out = format!(
        "dict(index={}, hook={}, op={}, positions={}, heads={}, neurons={}",
        st.index,
        s(&st.point.name()),
        s(st.op.name()),
        pos(&st.positions),
        opt(&st.heads, |h| ints(h)),
        opt(&st.neurons, |n| ints(n)),
    );
    match &st.op {
        StepOp::Add { vector, scale } => write!(out, ", vector={}, scale={}", floats(vector), f(*scale)),
        StepOp::Scale { factor } => write!(out, ", factor={}", f(*factor)),
        StepOp::Zero => Ok(()),
        StepOp::Mean { over } => {
            write!(
                out,
                ", over={}",
                opt(over, |o| format!("[{}]", o.iter().map(|x| s(x)).collect::<Vec<_>>().join(", ")))
            )
        }
        StepOp::Patch { source } => write!(out, ", source={}", s(source)),
        StepOp::ProjectOut { direction } => write!(out, ", direction={}", floats(direction)),
        StepOp::SetProjection {
            direction,
            value,
            cap,
            source,
        } => write!(
            out,
            ", direction={}, value={}, cap={}, source={}",
            floats(direction),
            opt(value, |v| f(*v)),
            opt(cap, |v| f(*v)),
            opt(source, |v| s(v))
        ),
        StepOp::Knockout { keys } => write!(out, ", keys={}", pos(keys)),
    }
    .expect("writing to a String");
    out.push(')');
    out
}

/// The header, the settings and `IV`, the interventions as data.
pub fn preamble(target: &str, how: &str, spec: &ModelSpec, opts: &ScriptOptions, plan: &Plan, extra_note: &[String]) -> String {
    let mut o = String::new();
    o.push_str("#!/usr/bin/env python3\n");
    writeln!(
        o,
        "\"\"\"A Scalpel intervention document, exported for {target} by `scalpel export` (docs/export.md).\n"
    )
    .unwrap();
    o.push_str(how);
    o.push('\n');
    if plan.disabled.is_empty() && extra_note.is_empty() {
        o.push_str("\nEvery intervention of the document is exported.\n");
    } else {
        o.push_str("\nNOT EXPORTED:\n");
        for (i, op) in &plan.disabled {
            writeln!(o, "  - intervention {i} ({op}): disabled in the document (\"enabled\": false)").unwrap();
        }
        for n in extra_note {
            writeln!(o, "  - {n}").unwrap();
        }
    }
    o.push_str("\"\"\"\n\n");
    writeln!(o, "MODEL = {}", s(&spec.name)).unwrap();
    writeln!(o, "ARCH = {}", s(&spec.arch)).unwrap();
    writeln!(o, "PROMPT = {}", s(&opts.prompt)).unwrap();
    writeln!(o, "MAX_NEW_TOKENS = {}", opts.max_new_tokens).unwrap();
    o.push_str("\n# The interventions, in document order (`blocks.*` expanded per layer). Positions:\n");
    o.push_str("# negative indices count from the end of the prompt, as in Scalpel.\n");
    o.push_str("IV = [\n");
    for st in &plan.steps {
        writeln!(o, "    {},", step(st)).unwrap();
    }
    o.push_str("]\n\n");
    o
}
