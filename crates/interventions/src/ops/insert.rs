//! `insert`: while generating, force `text` into the output at generation
//! step `at_step`, or after each generated occurrence of `after` (at most
//! `times`); `run.rs` applies it.

use scalpel_types::document::{Intervention, Op};

use super::{no_check, Compiled, OpDef};
use crate::context::Cx;
use crate::Res;

pub(crate) const DEF: OpDef = OpDef { name: "insert", fields: &["text", "at_step", "after", "times"], check: no_check, compile };

/// Text forced into the output while generating.
#[derive(Clone, Debug)]
pub struct Insert {
    pub index: usize,
    pub ids: Vec<u32>,
    pub at_step: Option<usize>,
    pub after: Option<Vec<u32>>,
    pub times: usize,
}

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::Insert { text, at_step, after, times } = &iv.op else { unreachable!("registered for insert") };
    if iv.hook.is_some() {
        return Err(format!("intervention {i}: op 'insert' takes no 'hook'"));
    }
    let encode = |field: &str, s: &str| -> Res<Vec<u32>> {
        let ids = cx.model.tokenizer().encode(s).map_err(|e| e.to_string())?;
        if ids.is_empty() {
            return Err(format!("intervention {i}: field '{field}' tokenizes to nothing"));
        }
        Ok(ids)
    };
    let ids = encode("text", text)?;
    let after = after.as_deref().map(|a| encode("after", a)).transpose()?;
    if at_step.is_some() == after.is_some() {
        return Err(format!("intervention {i}: give exactly one of 'at_step' or 'after'"));
    }
    Ok(Compiled::Insert(Insert { index: i, ids, at_step: *at_step, after, times: *times }))
}
