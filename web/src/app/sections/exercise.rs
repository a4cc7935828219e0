//! Exercises in the page: what the student sees (the task, hints, an
//! answer field, "Check" and its verdicts), the teacher's builder ("Make
//! an exercise": task, checks taken from the current results, preview,
//! link), and the shipped course with the student's progress. What an
//! exercise is and how a check measures: `state::exercise`; the checks
//! run in the worker (`worker/exercise.rs`).

use std::collections::BTreeMap;

use gloo_storage::{LocalStorage, Storage};
use leptos::prelude::*;

use super::super::link::{copy_text, link_for};
use super::super::panels::Panels;
use super::super::widgets::Markdown;
use super::super::Ctx;
use crate::protocol::Request;
use crate::state::exercise::{course, strongest_cell, Expected, PROGRESS_KEY};
use crate::state::{Check, Exercise, UiOp};

/// The exercises this browser has solved, by id.
fn progress() -> BTreeMap<String, bool> {
    LocalStorage::get(PROGRESS_KEY).unwrap_or_default()
}

fn mark_solved(id: &str) {
    let mut p = progress();
    p.insert(id.to_string(), true);
    // Private windows refuse: the verdict still shows.
    let _ = LocalStorage::set(PROGRESS_KEY, &p);
}

/// Opens a course exercise's state, keeping the loaded model and precision.
fn open_state(ctx: Ctx, panels: Panels, mut s: crate::state::Shared) {
    ctx.st.with_untracked(|cur| {
        s.model = cur.model.clone();
        s.precision = cur.precision;
    });
    let panel = s.panel;
    ctx.checked.set(None);
    ctx.building.set(false);
    ctx.st.set(s);
    panels.run(ctx, panel);
}

/// The student's view of the exercise the link poses.
#[component]
pub fn ExerciseCard() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let panels = expect_context::<Panels>();
    let ex = move || ctx.st.with(|s| s.exercise.clone());
    let has_answer = move || ex().is_some_and(|e| e.checks.iter().any(|c| matches!(c, Check::Answer { .. })));
    let on_check = move |_| {
        ctx.checked.set(None);
        ctx.send(Request::Check { state: Box::new(ctx.st.get_untracked()) });
    };
    // A full pass is kept as progress.
    Effect::new(move |_| {
        let solved = ctx.checked.with(|c| c.as_ref().is_some_and(|o| !o.is_empty() && o.iter().all(|x| x.pass)));
        if solved {
            if let Some(e) = ctx.st.with_untracked(|s| s.exercise.clone()) {
                mark_solved(&e.id);
            }
        }
    });
    let next = move || {
        let id = ex()?.id;
        let c = course();
        let i = c.iter().position(|s| s.exercise.as_ref().is_some_and(|e| e.id == id))?;
        c.into_iter().nth(i + 1)
    };
    let verdict = move || {
        ctx.checked.with(|c| {
            c.as_ref().map(|o| {
                let passed = o.iter().filter(|x| x.pass).count();
                if passed == o.len() {
                    "Solved: every check passes.".to_string()
                } else {
                    format!("Not yet: {passed} of {} checks pass.", o.len())
                }
            })
        })
    };
    view! {
        <section class="card exercise" aria-labelledby="exercise-h">
            <h2 id="exercise-h">{move || ex().map(|e| e.title).unwrap_or_default()}</h2>
            <div class="task" role="group" aria-label="Task">
                <Markdown text=Signal::derive(move || ex().map(|e| e.task).unwrap_or_default())/>
            </div>
            <Show when=move || ex().is_some_and(|e| !e.hints.is_empty())>
                <details class="hints">
                    <summary>{move || format!("Hints ({})", ex().map(|e| e.hints.len()).unwrap_or(0))}</summary>
                    <ol>{move || ex().map(|e| e.hints.into_iter().map(|h| view! { <li>{h}</li> }).collect_view())}</ol>
                </details>
            </Show>
            <div class="row">
                <Show when=has_answer>
                    <label>
                        "Your answer "
                        <input
                            type="text"
                            aria-label="Your answer"
                            prop:value=move || ctx.st.with(|s| s.answer.clone())
                            on:input=move |ev| {
                                let v = event_target_value(&ev);
                                ctx.st.update(|s| s.answer = v.chars().take(200).collect());
                            }
                        />
                    </label>
                </Show>
                <button on:click=on_check disabled=move || !ctx.ready()>"Check"</button>
                <Show when=move || !ctx.embed>
                    <button class="secondary" on:click=move |_| ctx.building.set(true)>"Edit this exercise"</button>
                </Show>
            </div>
            <Show when=move || ctx.checked.with(|c| c.is_some())>
                <p class="verdict" role="status" aria-label="Exercise verdict" data-pass=move || ctx.checked.with(|c| c.as_ref().is_some_and(|o| o.iter().all(|x| x.pass))).to_string()>
                    {verdict}
                </p>
                <ul class="checks" aria-label="Check results">
                    {move || {
                        ctx.checked.get().unwrap_or_default().into_iter().map(|o| {
                            let mark = if o.pass { "✓" } else { "✗" };
                            view! {
                                <li class:pass=o.pass data-pass=o.pass.to_string()>
                                    <strong>{mark}</strong>" "{o.wanted}<span class="muted">{format!(" — {}", o.measured)}</span>
                                </li>
                            }
                        }).collect_view()
                    }}
                </ul>
                <Show when=move || next().is_some() && ctx.checked.with(|c| c.as_ref().is_some_and(|o| o.iter().all(|x| x.pass)))>
                    <button on:click=move |_| { if let Some(s) = next() { open_state(ctx, panels, s) } }>"Next exercise →"</button>
                </Show>
            </Show>
            <p class="muted small">"The checks travel in the link: they give feedback, they are not a secret."</p>
        </section>
    }
}

/// The shipped course, with what this browser has solved.
#[component]
pub fn Course() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let panels = expect_context::<Panels>();
    // Stored progress, and the exercise just solved (its verdict is here
    // before the effect that stores it has run).
    let solved = move || {
        let mut p = progress();
        let now = ctx.checked.with(|c| c.as_ref().is_some_and(|o| !o.is_empty() && o.iter().all(|x| x.pass)));
        if let (true, Some(e)) = (now, ctx.st.with(|s| s.exercise.clone())) {
            p.insert(e.id, true);
        }
        p
    };
    view! {
        <div class="course" role="group" aria-label="Course">
            <strong>"Course"</strong>
            <ol class="course-list">
                {course()
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let e = s.exercise.clone().expect("course states pose exercises");
                        // "1. Title" shows as "1" and "Title": a folded card keeps only the number.
                        let name = e.title.split_once(". ").map_or(e.title.clone(), |(_, t)| t.to_string());
                        let id = StoredValue::new(e.id.clone());
                        let done = move || id.with_value(|id| solved().get(id).copied().unwrap_or(false));
                        view! {
                            <li>
                                <button class="preset" data-done=move || done().to_string() aria-label=format!("Exercise: {}", e.title) title=e.title.clone() on:click=move |_| open_state(ctx, panels, s.clone())>
                                    <span class="course-num">{format!("{}.", i + 1)}</span>
                                    <span class="course-title">{format!(" {name}")}</span>
                                    {move || if done() { " ✓" } else { "" }}
                                </button>
                            </li>
                        }
                    })
                    .collect_view()}
            </ol>
        </div>
    }
}

/// The teacher's builder: the task, the checks (taken from the current
/// results, or typed), a preview as the student sees it, and the link.
#[component]
pub fn ExerciseBuilder() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let panels = expect_context::<Panels>();
    let start = ctx.st.with_untracked(|s| s.exercise.clone());
    let title = RwSignal::new(start.as_ref().map(|e| e.title.clone()).unwrap_or_default());
    let task = RwSignal::new(start.as_ref().map(|e| e.task.clone()).unwrap_or_default());
    let hints = RwSignal::new(start.as_ref().map(|e| e.hints.join("\n")).unwrap_or_default());
    let checks = RwSignal::new(start.as_ref().map(|e| e.checks.clone()).unwrap_or_default());
    let answer_kind = RwSignal::new("text".to_string());
    let answer_value = RwSignal::new(String::new());
    let tolerance = RwSignal::new(String::from("0"));
    let contains = RwSignal::new(String::new());
    let note = RwSignal::new(String::new());
    let built = move || -> Result<Exercise, String> {
        let e = Exercise {
            id: Exercise::id_from_title(&title.get()),
            title: title.get().trim().to_string(),
            task: task.get(),
            hints: hints.get().lines().map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect(),
            checks: checks.get(),
        };
        e.validate(crate::state::MAX_TEXT)?;
        Ok(e)
    };
    let add = move |c: Check| checks.update(|cs| cs.push(c));
    let from_next = move |_| match panels.top_next() {
        Some((token, _, intervened)) => add(Check::NextToken { token, top1: true, min_prob: None, max_prob: None, baseline: !intervened }),
        None => note.set("Run a comparison first (Generate & intervene): its most likely next token becomes the check.".into()),
    };
    let from_stack = move |_| {
        let items: Vec<_> = ctx.st.with_untracked(|s| s.stack.iter().filter(|i| i.enabled).cloned().collect());
        match items.first() {
            None => note.set("The stack is empty: add the interventions the student should make first.".into()),
            Some(first) => {
                let same = items.iter().filter(|i| i.op == first.op).count() as u32;
                let strength = matches!(first.op, UiOp::Add | UiOp::Scale).then(|| items.iter().map(|i| i.strength.abs()).fold(0f32, f32::max));
                add(Check::Stack { op: Some(first.op), layer: None, min: 1, max: Some(same), max_strength: strength })
            }
        }
    };
    let from_sweep = move |_| match panels.sweep().as_ref().and_then(strongest_cell) {
        Some(c) => add(Check::StrongestCell { layer: Some(c.layer), position: c.position, head: c.head }),
        None => note.set("Run a patching sweep first: its strongest cell becomes the check.".into()),
    };
    let from_answer = move |_| {
        let v = answer_value.get_untracked();
        let expected = match answer_kind.get_untracked().as_str() {
            "number" => match (v.trim().parse::<f64>(), tolerance.get_untracked().trim().parse::<f64>()) {
                (Ok(value), Ok(tol)) => Expected::Number { value, tolerance: tol.abs() },
                _ => return note.set("The answer and the tolerance must be numbers.".into()),
            },
            "head" => match crate::state::exercise::parse_head(&v) {
                Some((layer, head)) => Expected::Head { layer, head },
                None => return note.set("Write the head like L9H6.".into()),
            },
            _ => Expected::Text { value: v.trim().to_string() },
        };
        add(Check::Answer { expected });
    };
    let from_contains = move |_| {
        let v = contains.get_untracked();
        if !v.is_empty() {
            add(Check::Generated { contains: Some(v), avoids: None, baseline: false });
        }
    };
    let preview = move |_| match built() {
        Ok(e) => {
            ctx.st.update(|s| {
                s.exercise = Some(e);
                s.answer.clear();
            });
            ctx.checked.set(None);
            ctx.building.set(false);
        }
        Err(e) => note.set(e),
    };
    let copy = move |_| match built() {
        Ok(e) => {
            ctx.st.update(|s| {
                s.exercise = Some(e);
                s.answer.clear();
            });
            let link = ctx.st.with_untracked(|s| link_for(s, None));
            copy_text(&link);
            note.set(format!("Link copied ({} characters).", link.len()));
        }
        Err(e) => note.set(e),
    };
    view! {
        <section class="card builder" aria-labelledby="builder-h">
            <h2 id="builder-h">"Make an exercise"</h2>
            <p class="muted">"Set up the panels as the student should start, write the task, and add checks; the student works from this state. The checks travel in the link (feedback, not a secret)."</p>
            <div class="grid2">
                <label>"Title" <input type="text" aria-label="Exercise title" prop:value=move || title.get() on:input=move |ev| title.set(event_target_value(&ev)) /></label>
                <label>"Hints (one per line)" <textarea rows="2" aria-label="Exercise hints" prop:value=move || hints.get() on:input=move |ev| hints.set(event_target_value(&ev))></textarea></label>
            </div>
            <label class="block">"Task (plain text, **bold**, *italic*, `code`, - lists)"
                <textarea rows="4" aria-label="Exercise task" prop:value=move || task.get() on:input=move |ev| task.set(event_target_value(&ev))></textarea>
            </label>
            <div class="row">
                <span>"Add a check from the current result: "</span>
                <button class="secondary" on:click=from_next>"Next token is the current top-1"</button>
                <button class="secondary" on:click=from_stack>"Stack like the current one"</button>
                <button class="secondary" on:click=from_sweep>"Sweep's strongest cell"</button>
            </div>
            <div class="row">
                <label>"Answer "
                    <select aria-label="Answer type" on:change=move |ev| answer_kind.set(event_target_value(&ev))>
                        <option value="text">"text"</option>
                        <option value="number">"number"</option>
                        <option value="head">"head (L9H6)"</option>
                    </select>
                </label>
                <input type="text" class="short" aria-label="Expected answer" prop:value=move || answer_value.get() on:input=move |ev| answer_value.set(event_target_value(&ev)) />
                <Show when=move || answer_kind.get() == "number">
                    <label>"± " <input type="text" class="short" aria-label="Answer tolerance" prop:value=move || tolerance.get() on:input=move |ev| tolerance.set(event_target_value(&ev)) /></label>
                </Show>
                <button class="secondary" on:click=from_answer>"Add answer check"</button>
                <input type="text" class="short" aria-label="Generated text contains" placeholder="text" prop:value=move || contains.get() on:input=move |ev| contains.set(event_target_value(&ev)) />
                <button class="secondary" on:click=from_contains>"Add \"generated text contains\""</button>
            </div>
            <ol class="checks" aria-label="Exercise checks">
                {move || checks.get().into_iter().enumerate().map(|(i, c)| view! {
                    <li>
                        {c.describe()}" "
                        <button class="icon" aria-label=format!("Remove check {}", i + 1) on:click=move |_| checks.update(|cs| { if i < cs.len() { cs.remove(i); } })>"✕"</button>
                    </li>
                }).collect_view()}
            </ol>
            <div class="row">
                <button on:click=preview>"Preview as student"</button>
                <button class="secondary" on:click=copy>"Copy exercise link"</button>
                <button class="secondary" on:click=move |_| ctx.building.set(false)>"Close"</button>
                <span class="muted" role="status" aria-label="Builder note">{move || note.get()}</span>
            </div>
        </section>
    }
}
