//! Continuous batching: one worker thread owns a model and serves many requests at once. Each
//! step it builds one batch from every running sequence (a prefill chunk for new ones, one
//! token for the rest), runs a single forward pass, and samples each sequence's next token.
//! Requests wait in a bounded queue; a full queue refuses new ones at once. A request whose
//! receiver is dropped (the client went away) is cancelled at the next step and its slot freed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::generate::{FinishReason, GenerateParams, StopMatcher};
use super::sampler::Sampler;
use crate::error::{Error, Result};
use crate::models::{BatchItem, CausalLm};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Prompt tokens one sequence may prefill per step, so running sequences keep decoding while a
/// long prompt is read.
pub const PREFILL_CHUNK: usize = 256;

/// The chosen token's log-probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// One generated token and the text it made printable (may be empty: a partial character
    /// or a possible stop string is held back).
    Token { id: u32, text: String, logprob: Option<TokenLogprob> },
    /// Text released at the end (held-back bytes), then the end.
    Done { text: String, finish: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    Error(String),
}

pub struct Request {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Some(k): report the chosen token's logprob and the top k alternatives.
    pub logprobs: Option<usize>,
    pub logit_bias: Vec<(u32, f32)>,
    /// A grammar the output must follow (response_format): tokens it does not allow are masked
    /// before sampling, and the sequence ends when the grammar is complete.
    pub constraint: Option<super::constraint::Constraint>,
    pub events: UnboundedSender<Event>,
}

/// Counters read by /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub queued: AtomicU64,
    pub running: AtomicU64,
    pub steps: AtomicU64,
    pub ttft: Histogram,
    pub inter_token: Histogram,
}

pub const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    total: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    /// (cumulative bucket counts, count, sum in seconds)
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        (
            self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            self.total.load(Ordering::Relaxed),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// A fault to inject, for tests of how the server reports engine failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// One forward pass fails once this many tokens have been generated.
    ErrorAfter(u64),
    /// The engine thread panics once this many tokens have been generated.
    PanicAfter(u64),
}

impl Fault {
    /// `error-after=N` or `panic-after=N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("fault '{s}': use error-after=N or panic-after=N"));
        let (kind, n) = s.split_once('=').ok_or_else(bad)?;
        let n: u64 = n.parse().map_err(|_| bad())?;
        match kind {
            "error-after" => Ok(Self::ErrorAfter(n)),
            "panic-after" => Ok(Self::PanicAfter(n)),
            _ => Err(bad()),
        }
    }
}

/// The handle requests are submitted through; clone it freely.
#[derive(Clone)]
pub struct Scheduler {
    queue: SyncSender<Request>,
    pub metrics: Arc<Metrics>,
    alive: Arc<AtomicBool>,
    pub tokenizer: Arc<Tokenizer>,
    pub context_length: usize,
    pub slots: usize,
    /// Requests allowed to wait for a slot.
    pub max_queue: usize,
}

impl Scheduler {
    /// Starts the worker thread. `slots` sequences run at once; `queue` more may wait.
    pub fn start(model: Box<dyn CausalLm>, tokenizer: Arc<Tokenizer>, slots: usize, queue: usize) -> Self {
        Self::start_with_fault(model, tokenizer, slots, queue, None)
    }

    pub fn start_with_fault(model: Box<dyn CausalLm>, tokenizer: Arc<Tokenizer>, slots: usize, queue: usize, fault: Option<Fault>) -> Self {
        // Room for the requests the worker is about to take into free slots, plus `queue`
        // waiting ones: a request must not be refused only because the worker has not yet
        // picked up the one before it.
        let (tx, rx) = mpsc::sync_channel(queue + slots.max(1));
        let metrics = Arc::new(Metrics::default());
        let alive = Arc::new(AtomicBool::new(true));
        let context_length = model.info().context_length;
        let worker = Worker {
            model: Mutex::new(model),
            tokenizer: tokenizer.clone(),
            slots: slots.max(1),
            metrics: metrics.clone(),
            fault: Mutex::new(fault),
            alive: alive.clone(),
        };
        let flag = alive.clone();
        std::thread::Builder::new()
            .name("modu-engine".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run(rx)));
                if r.is_err() {
                    tracing::error!("the engine thread panicked; the server reports unhealthy");
                }
                flag.store(false, Ordering::SeqCst);
            })
            .expect("spawn the engine thread");
        Self { queue: tx, metrics, alive, tokenizer, context_length, slots: slots.max(1), max_queue: queue }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Queues a request; `Err` at once when the queue is full or the engine is gone.
    /// Requests waiting for a slot: submitted, not yet admitted, beyond the free slots (the ones
    /// the worker is about to admit do not wait). This is what `max_queue` bounds.
    pub fn waiting(&self) -> u64 {
        self.waiting_beyond_free(self.metrics.queued.load(Ordering::SeqCst))
    }

    fn waiting_beyond_free(&self, queued: u64) -> u64 {
        let free = self.slots.saturating_sub(self.metrics.running.load(Ordering::SeqCst) as usize);
        queued.saturating_sub(free as u64)
    }

    pub fn submit(&self, req: Request) -> std::result::Result<(), Rejected> {
        if !self.is_alive() {
            return Err(Rejected::EngineDown);
        }
        // Waiting = submitted but not admitted, less the free slots the worker will fill at once.
        // Check and count in one step, so that concurrent submits cannot both take the last place.
        loop {
            let queued = self.metrics.queued.load(Ordering::SeqCst);
            if self.waiting_beyond_free(queued) >= self.max_queue as u64 {
                self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Rejected::QueueFull);
            }
            if self.metrics.queued.compare_exchange(queued, queued + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                break;
            }
        }
        match self.queue.try_send(req) {
            Ok(()) => {
                self.metrics.requests.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.metrics.queued.fetch_sub(1, Ordering::SeqCst);
                self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => Rejected::QueueFull,
                    TrySendError::Disconnected(_) => Rejected::EngineDown,
                })
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    QueueFull,
    EngineDown,
}

struct Worker {
    model: Mutex<Box<dyn CausalLm>>,
    tokenizer: Arc<Tokenizer>,
    slots: usize,
    metrics: Arc<Metrics>,
    fault: Mutex<Option<Fault>>,
    alive: Arc<AtomicBool>,
}

/// Marks the engine dead when its thread unwinds, before the running sequences (declared
/// earlier, so dropped later) close their clients' streams: a client that sees its request fail
/// then finds /health already failing.
struct DeadOnPanic(Arc<AtomicBool>);

impl Drop for DeadOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(false, Ordering::SeqCst);
        }
    }
}

struct Seq<'t> {
    slot: usize,
    req: Request,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    generated: Vec<u32>,
    history: Vec<u32>,
    sampler: Sampler,
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    eog: Vec<u32>,
    started: Instant,
    last_token: Option<Instant>,
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    logits.iter().map(|&l| (l as f64 - lse) as f32).collect()
}

impl Worker {
    fn run(self, rx: Receiver<Request>) {
        let tok: &Tokenizer = &self.tokenizer;
        let mut model = match self.model.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let ctx = model.info().context_length;
        let mut running: Vec<Seq> = Vec::new();
        let _dead_on_panic = DeadOnPanic(self.alive.clone());
        loop {
            // Admit waiting requests into free slots; block only when idle.
            while running.len() < self.slots {
                let req = if running.is_empty() {
                    match rx.recv() {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                } else {
                    match rx.try_recv() {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                };
                // Counted as running before it stops counting as queued, so that a submit in
                // between never sees its slot as free.
                self.metrics.running.fetch_add(1, Ordering::SeqCst);
                self.metrics.queued.fetch_sub(1, Ordering::SeqCst);
                if req.events.is_closed() {
                    self.metrics.running.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let slot = (0..self.slots).find(|s| !running.iter().any(|r| r.slot == *s)).expect("a free slot");
                model.free_slot(slot);
                let sampler = match Sampler::new(req.params.sampling.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        self.metrics.running.fetch_sub(1, Ordering::SeqCst);
                        let _ = req.events.send(Event::Error(e.to_string()));
                        continue;
                    }
                };
                self.metrics.prompt_tokens.fetch_add(req.prompt.len() as u64, Ordering::Relaxed);
                let eog = if req.params.stop_at_eog { tok.end_of_generation_ids() } else { Vec::new() };
                running.push(Seq {
                    slot,
                    history: req.prompt.clone(),
                    stops: StopMatcher::new(&req.params.stop),
                    req,
                    prefilled: 0,
                    generated: Vec::new(),
                    sampler,
                    decoder: StreamDecoder::new(tok),
                    eog,
                    started: Instant::now(),
                    last_token: None,
                });
            }
            // Clients that went away.
            running.retain(|s| {
                let gone = s.req.events.is_closed();
                if gone {
                    model.free_slot(s.slot);
                }
                !gone
            });
            self.metrics.running.store(running.len() as u64, Ordering::SeqCst);
            if running.is_empty() {
                continue;
            }

            let inputs: Vec<(usize, Vec<u32>, usize)> = running
                .iter()
                .map(|s| {
                    if s.prefilled < s.req.prompt.len() {
                        let end = (s.prefilled + PREFILL_CHUNK).min(s.req.prompt.len());
                        (s.slot, s.req.prompt[s.prefilled..end].to_vec(), s.prefilled)
                    } else {
                        (s.slot, vec![*s.generated.last().expect("decoding after a token")], s.req.prompt.len() + s.generated.len() - 1)
                    }
                })
                .collect();
            let batch: Vec<BatchItem> = inputs.iter().map(|(slot, ids, offset)| BatchItem { slot: *slot, ids, offset: *offset }).collect();
            let logits = model.forward_batch(&batch).and_then(|t| Ok(t.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?));
            self.metrics.steps.fetch_add(1, Ordering::Relaxed);
            let generated = self.metrics.generated_tokens.load(Ordering::Relaxed);
            let fault = self.fault.lock().map(|f| *f).unwrap_or(None);
            let logits = match fault {
                Some(Fault::ErrorAfter(n)) if generated >= n => {
                    if let Ok(mut f) = self.fault.lock() {
                        *f = None;
                    }
                    Err(Error::Invalid("injected engine fault".into()))
                }
                Some(Fault::PanicAfter(n)) if generated >= n => panic!("injected engine panic"),
                _ => logits,
            };
            let mut logits = match logits {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("forward pass failed: {e}");
                    for s in running.drain(..) {
                        let _ = s.req.events.send(Event::Error(format!("the engine failed: {e}")));
                        model.free_slot(s.slot);
                    }
                    continue;
                }
            };

            let mut finished = Vec::new();
            let mut failed = Vec::new();
            for (i, s) in running.iter_mut().enumerate() {
                let n_in = inputs[i].1.len();
                if s.prefilled < s.req.prompt.len() {
                    s.prefilled += n_in;
                    if s.prefilled < s.req.prompt.len() {
                        continue;
                    }
                }
                let mut row = std::mem::take(&mut logits[i]);
                for &(id, b) in &s.req.logit_bias {
                    if let Some(l) = row.get_mut(id as usize) {
                        *l += b;
                    }
                }
                if let Some(c) = s.req.constraint.as_mut() {
                    if let Err(e) = c.mask_logits(&mut row) {
                        failed.push((i, e));
                        continue;
                    }
                }
                let id = s.sampler.sample(&row, &s.history);
                if let Some(c) = s.req.constraint.as_mut() {
                    if let Err(e) = c.commit(id) {
                        failed.push((i, e));
                        continue;
                    }
                }
                let now = Instant::now();
                match s.last_token {
                    None => self.metrics.ttft.observe(now.duration_since(s.started).as_secs_f64()),
                    Some(t) => self.metrics.inter_token.observe(now.duration_since(t).as_secs_f64()),
                }
                s.last_token = Some(now);
                if s.eog.contains(&id) {
                    finished.push((i, FinishReason::Stop));
                    continue;
                }
                let logprob = s.req.logprobs.map(|k| {
                    let lp = log_softmax(&row);
                    let mut order: Vec<u32> = (0..lp.len() as u32).collect();
                    let k = k.min(lp.len());
                    if k > 0 {
                        order.select_nth_unstable_by(k - 1, |a, b| lp[*b as usize].total_cmp(&lp[*a as usize]));
                    }
                    // Tokens a grammar refused have -inf: not alternatives, and not valid JSON numbers.
                    let mut top: Vec<(u32, f32)> =
                        order[..k].iter().map(|&t| (t, lp[t as usize])).filter(|(_, l)| l.is_finite()).collect();
                    top.sort_by(|a, b| b.1.total_cmp(&a.1));
                    TokenLogprob { id, logprob: lp[id as usize], top }
                });
                s.generated.push(id);
                s.history.push(id);
                self.metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
                let piece = s.decoder.push(id);
                let (ready, stopped) = s.stops.push(&piece);
                if s.req.events.send(Event::Token { id, text: ready, logprob }).is_err() {
                    finished.push((i, FinishReason::Cancelled));
                    continue;
                }
                let grammar_done = s.req.constraint.as_ref().is_some_and(|c| c.is_finished());
                if stopped || grammar_done {
                    finished.push((i, FinishReason::Stop));
                } else if s.generated.len() >= s.req.params.max_tokens || s.req.prompt.len() + s.generated.len() >= ctx {
                    finished.push((i, FinishReason::Length));
                }
            }
            // A sequence either finished or failed in this step, never both.
            let mut ended: Vec<(usize, std::result::Result<FinishReason, String>)> =
                finished.into_iter().map(|(i, f)| (i, Ok(f))).chain(failed.into_iter().map(|(i, e)| (i, Err(e)))).collect();
            ended.sort_by_key(|(i, _)| *i);
            for (i, end) in ended.into_iter().rev() {
                let mut s = running.swap_remove(i);
                let finish = match end {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!("constrained decoding stopped a sequence: {e}");
                        let _ = s.req.events.send(Event::Error(e));
                        model.free_slot(s.slot);
                        continue;
                    }
                };
                let text = if s.stops.is_stopped() || finish == FinishReason::Cancelled {
                    String::new()
                } else {
                    s.stops.finish(&s.decoder.finish())
                };
                let _ = s.req.events.send(Event::Done {
                    text,
                    finish,
                    prompt_tokens: s.req.prompt.len(),
                    completion_tokens: s.generated.len(),
                });
                model.free_slot(s.slot);
            }
            // swap_remove in reverse index order keeps the remaining indices valid.
            self.metrics.running.store(running.len() as u64, Ordering::SeqCst);
        }
    }
}

impl From<Rejected> for Error {
    fn from(r: Rejected) -> Self {
        Error::Invalid(match r {
            Rejected::QueueFull => "the request queue is full".into(),
            Rejected::EngineDown => "the engine is not running".into(),
        })
    }
}

/// Runs one request to the end on a scheduler (for tests and simple callers).
pub fn run_blocking(s: &Scheduler, prompt: Vec<u32>, params: GenerateParams) -> Result<(String, Vec<u32>, FinishReason)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    s.submit(Request { prompt, params, logprobs: None, logit_bias: Vec::new(), constraint: None, events: tx })?;
    let mut text = String::new();
    let mut ids = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Token { id, text: t, .. } => {
                ids.push(id);
                text.push_str(&t);
            }
            Event::Done { text: t, finish, .. } => {
                text.push_str(&t);
                return Ok((text, ids, finish));
            }
            Event::Error(e) => return Err(Error::Invalid(e)),
        }
    }
    Err(Error::Invalid("the engine stopped".into()))
}
