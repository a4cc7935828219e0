//! The page's side of the worker: starting it, the request queue (one
//! request in flight; newer ones wait in order, each dropping only the
//! waiting requests it supersedes (`Request::supersedes`), and stop the
//! running one if it can be stopped), the shared stop flag (or, where the
//! page is not cross-origin isolated, ending the worker to stop it), handing
//! each response to whoever shows it, and a fresh worker when one crashes.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker};

use super::{panels, Ctx, Phase};
use crate::js::{cross_origin_isolated, js_err};
use crate::protocol::{Envelope, Request, Response, STOP_FLAG_INDEX};
use crate::WORKER_SCRIPT;

#[derive(Default)]
pub struct Client {
    worker: Option<Worker>,
    stop: Option<js_sys::Int32Array>,
    stop_buffer: Option<JsValue>,
    stop_sent: bool,
    in_flight: Option<Request>,
    pending: std::collections::VecDeque<(Request, Option<JsValue>)>,
    /// The worker has said `Ready` (an error before that means it could not start).
    ready: bool,
    /// Workers that crashed this visit.
    crashes: u32,
    /// Which worker is the current one: events still queued from a replaced
    /// worker are ignored.
    generation: u32,
    /// What the current worker's panic said (`Response::Panicked`), for the
    /// crash notice: the error event that follows says only "unreachable".
    panic: Option<String>,
}

/// How [`Client::stop`] stops the running work.
#[derive(Clone, Copy, PartialEq)]
pub enum Stopping {
    /// Nothing stoppable is running.
    Nothing,
    /// The shared flag is raised: the worker ends the work and answers `Cancelled`.
    Flag,
    /// No shared flag (the page is not cross-origin isolated): the caller
    /// ends the worker ([`Client::halt`]) and starts a fresh one.
    EndWorker,
}

/// Crashes after which the page stops starting new workers (something in
/// the page's state crashes every one).
const MAX_CRASHES: u32 = 3;

impl Client {
    /// Posts `req` now (`Ok(true)`) or queues it behind the running one
    /// (`Ok(false)`, asking the running one to stop when it can).
    pub fn submit(&mut self, req: Request, file: Option<JsValue>) -> Result<bool, String> {
        match &self.in_flight {
            Some(running) => {
                if running.stoppable() {
                    self.set_stop(1);
                }
                self.pending.retain(|(older, _)| !req.supersedes(older));
                self.pending.push_back((req, file));
                Ok(false)
            }
            None => self.post(req, file.as_ref()).map(|_| true),
        }
    }

    /// The running request ended: posts the waiting one, if any (its kind).
    pub fn next(&mut self) -> Option<Result<&'static str, String>> {
        self.in_flight = None;
        let (req, file) = self.pending.pop_front()?;
        let kind = req.kind();
        Some(self.post(req, file.as_ref()).map(|_| kind))
    }

    /// How the running work can be stopped: by the shared flag (raised
    /// here), or, without cross-origin isolation, only by ending the worker
    /// ([`Client::halt`]).
    pub fn stop(&mut self) -> Stopping {
        match &self.in_flight {
            Some(r) if r.stoppable() => {}
            _ => return Stopping::Nothing,
        }
        if self.stop.is_some() {
            self.set_stop(1);
            Stopping::Flag
        } else {
            Stopping::EndWorker
        }
    }

    /// Ends the worker to stop its work (there is no shared flag): what was
    /// running and waiting is dropped, and a fresh worker must be started.
    /// Not a crash. Returns the kind of request that was running.
    pub fn halt(&mut self) -> Option<&'static str> {
        if let Some(w) = self.worker.take() {
            w.terminate();
        }
        self.pending.clear();
        self.stop_sent = false;
        self.ready = false;
        self.in_flight.take().map(|r| r.kind())
    }

    fn post(&mut self, req: Request, file: Option<&JsValue>) -> Result<(), String> {
        let worker = self.worker.as_ref().ok_or("the engine worker is not running")?;
        let env = js_sys::Object::new();
        let v = serde_wasm_bindgen::to_value(&req).map_err(|e| e.to_string())?;
        js_sys::Reflect::set(&env, &Envelope::REQ.into(), &v).map_err(js_err)?;
        if let Some(f) = file {
            js_sys::Reflect::set(&env, &Envelope::FILE.into(), f).map_err(js_err)?;
        }
        if !self.stop_sent {
            if let Some(buf) = &self.stop_buffer {
                js_sys::Reflect::set(&env, &Envelope::STOP.into(), buf).map_err(js_err)?;
            }
            self.stop_sent = true;
        }
        self.set_stop(0);
        worker.post_message(&env).map_err(js_err)?;
        self.in_flight = Some(req);
        Ok(())
    }

    /// The worker died: ends it and forgets its work. Returns whether it
    /// had started, the kind of request it was running, and the crashes so far.
    fn crash(&mut self) -> (bool, Option<&'static str>, u32) {
        if let Some(w) = self.worker.take() {
            w.terminate();
        }
        self.pending.clear();
        let what = self.in_flight.take().map(|r| r.kind());
        // The next worker needs the stop buffer too.
        self.stop_sent = false;
        self.crashes += 1;
        (std::mem::take(&mut self.ready), what, self.crashes)
    }

    fn set_stop(&self, v: i32) {
        if let Some(a) = &self.stop {
            let _ = js_sys::Atomics::store(a, STOP_FLAG_INDEX, v);
        }
    }
}

/// Starts the worker and routes its messages: to the page's shared state
/// (`Ctx::on_response`) and to the panels.
pub fn start(ctx: Ctx, panels: panels::Panels) {
    if cross_origin_isolated() && ctx.with_client(|c| c.stop.is_none()).unwrap_or(false) {
        let buf = js_sys::SharedArrayBuffer::new(4);
        ctx.with_client(|c| {
            c.stop = Some(js_sys::Int32Array::new(&buf));
            c.stop_buffer = Some(buf.into());
        });
    }
    let generation = ctx.with_client(|c| {
        c.generation += 1;
        c.generation
    });
    let current = move || ctx.with_client(|c| c.generation) == generation;
    let script = format!("{WORKER_SCRIPT}?threads={}", ctx.threads.get_untracked());
    let worker = match Worker::new(&script) {
        Ok(w) => w,
        Err(e) => {
            ctx.phase.set(Phase::Failed);
            ctx.error.set(Some(format!("could not start the engine worker: {}", js_err(e))));
            return;
        }
    };
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        if !current() {
            return;
        }
        match serde_wasm_bindgen::from_value::<Response>(ev.data()) {
            Ok(Response::Panicked { message }) => {
                ctx.with_client(|c| c.panic = Some(message));
            }
            Ok(r) => {
                if matches!(r, Response::Ready { .. }) {
                    ctx.with_client(|c| c.ready = true);
                }
                ctx.on_response(&r);
                // The same model reloaded after a Stop that ended the worker:
                // the panels keep what they show (the stopped output).
                if !(matches!(r, Response::Loaded(_)) && ctx.take_reload_after_stop()) {
                    panels.on_response(ctx, &r);
                }
                if r.is_final() {
                    ctx.finished();
                }
            }
            Err(e) => ctx.error.set(Some(format!("bad message from worker: {e}"))),
        }
    });
    worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    let onerror = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
        ev.prevent_default();
        if !current() {
            return;
        }
        // The panic's own words when the worker said them before it trapped.
        let msg = ctx.with_client(|c| c.panic.take()).flatten().unwrap_or_else(|| ev.message());
        let (started, what, crashes) = ctx.with_client(|c| c.crash()).unwrap_or((false, None, MAX_CRASHES + 1));
        if !started {
            let msg = if msg.is_empty() { "the script did not load".to_string() } else { msg };
            ctx.error.set(Some(format!("could not start the engine worker: {msg}")));
            ctx.phase.set(Phase::Failed);
            return;
        }
        let msg = if msg.is_empty() { "no message".to_string() } else { msg };
        if crashes > MAX_CRASHES {
            ctx.error.set(Some(format!("The engine worker crashed {crashes} times (last: {msg}); reload the page to start again.")));
            ctx.phase.set(Phase::Failed);
            return;
        }
        ctx.crashed(&msg, what);
        start(ctx, panels);
    });
    worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
    onerror.forget();
    ctx.with_client(|c| c.worker = Some(worker));
}
