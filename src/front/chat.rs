//! `POST /v1/chat/completions`: authenticate (while the prompt is prepared), validate,
//! admit under the key's limits, then hand the turn to a SessionActor and write its events
//! as one JSON response or as SSE chunks. Errors before the first token get their HTTP
//! status; an error after streaming has begun is sent as a `data: {"error":...}` event
//! followed by `[DONE]`. Dropping the response (the client went away) drops the session's
//! channel, which cancels the job. A request for `n` choices runs `n` sessions, one job
//! each, which share the prompt's KV blocks through the worker's prefix cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream::{self, StreamExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

use super::http::{api_key, body_bytes, count_error, error_response, parse_json};
use super::FrontState;
use crate::api::chat_request::{ChatRequest, TokenChoice};
use crate::api::chat_response::{
    finish_reason, sse_event, AssistantMessage, Choice, CompletionId, Usage, SSE_DONE,
};
use crate::api::error::ApiError;
use crate::ids::random_hex;
use crate::session::actor::{SessionActor, SessionEvent, Turn};
use crate::session::inbox::Arrival;
use crate::session::models::ModelEntry;
use crate::session::prompt::{prepare, PreparedPrompt};
use crate::session::Services;
use crate::telemetry::metrics;
use crate::telemetry::trace_context::follow;
use crate::tools::results::HostedOutcome;
use crate::tools::tool_loop;

pub async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    // The request's trace: a child of the caller's when it sent a `traceparent`. The session
    // keeps it open until the turn is settled.
    let span = tracing::info_span!(
        "POST /v1/chat/completions",
        otel.kind = "server",
        model = tracing::field::Empty,
        job = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty
    );
    follow(
        &span,
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let arrived = Instant::now();
    let r = match chat(req, payload, state, span.clone(), arrived)
        .instrument(span.clone())
        .await
    {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    span.record("http.response.status_code", r.status().as_u16());
    r
}

async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
    span: tracing::Span,
    arrived: Instant,
) -> Result<HttpResponse, ApiError> {
    let s = &state.services;
    let secret = api_key(&req)?;
    // The key is looked up (unless it was found valid a moment ago: a store round trip on a
    // blocking thread) while the body is read and the prompt rendered and tokenized. Its
    // verdict is still taken first: a bad key gets its 401 whatever the body holds, and
    // nothing is spent or held for it (the hold checks the key again, atomically).
    let authenticate = s
        .billing
        .authenticate(secret)
        .instrument(tracing::info_span!("billing.authenticate"));
    let (key, read) =
        futures_util::future::join(authenticate, read_request(&req, payload, s)).await;
    let key = key
        .map_err(|e| ApiError::logged("authenticating", e))?
        .ok_or_else(|| ApiError::unauthorized("Incorrect API key provided"))?;
    let (request, model, prompt) = read?;
    let permit = s
        .billing
        .admit(&key.record, s.config.limits)
        .map_err(|l| ApiError::rate_limited(l.message, l.retry_after_secs))?;

    if request.hosted.runs_tools() && request.n > 1 {
        return Err(ApiError::invalid(
            "n",
            "`n` must be 1 when hosted tools run on the server; set `sogni_tool_execution` or `sogni_tools` to false for several choices",
        ));
    }
    let job = random_hex(12).map_err(|e| ApiError::logged("a job id", e))?;
    let id = Arc::new(CompletionId {
        id: format!("chatcmpl-{job}"),
        created: crate::clock::unix_secs(),
        model: model.id.clone(),
    });
    let (stream, include_usage, logprobs) = (
        request.stream,
        request.include_usage,
        request.logprobs.is_some(),
    );
    span.record("model", model.id.as_str())
        .record("job", id.id.as_str());
    // One session per choice; choice `i` samples with the seed plus `i` and only the first
    // pays for the shared prompt.
    let permit = Arc::new(permit);
    let mut choices = Vec::with_capacity(request.n);
    for i in 0..request.n {
        let mut prompt = prompt.clone();
        let seed = &mut prompt.params.sampler.seed;
        *seed = seed.wrapping_add(i as u64);
        let turn = Turn {
            job_id: match i {
                0 => id.id.clone(),
                i => format!("{}-{i}", id.id),
            },
            key: key.clone(),
            model: Arc::clone(&model),
            request: request.clone(),
            permit: Arc::clone(&permit),
            bills_prompt: i == 0,
            span: span.clone(),
            arrived,
        };
        choices.push(if request.hosted.runs_tools() {
            tool_loop::start(Arc::clone(&state.services), turn, prompt, origin(&req))
        } else {
            SessionActor::start_turn(Arc::clone(&state.services), turn, prompt)
        });
    }
    // Any choice that cannot start fails the request; dropping the others cancels them.
    for events in &mut choices {
        match events.recv().await {
            Some(SessionEvent::Started) => {}
            Some(SessionEvent::Error(e)) => return Err(e),
            other => {
                return Err(ApiError::logged(
                    "starting the session",
                    format!("unexpected first event {other:?}"),
                ))
            }
        }
    }
    if stream {
        Ok(sse(choices, id, include_usage))
    } else {
        whole(choices, &id, logprobs).await
    }
}

/// The body read, parsed, and its prompt made ready for a worker, with the model it names.
/// Only the reading happens on this (HTTP) thread; parsing, rendering, tokenizing and
/// compiling the grammar run on the prepare threads.
async fn read_request(
    req: &HttpRequest,
    payload: web::Payload,
    s: &Services,
) -> Result<(ChatRequest, Arc<ModelEntry>, PreparedPrompt), ApiError> {
    let token_type = header_token_type(req)?;
    let body = body_bytes(req, payload, s.config.server.max_body_bytes).await?;
    let models = Arc::clone(&s.models);
    // The hosted tools offered are those live media workers can run.
    let pipelines = s.media_pipelines().await;
    s.preparer
        .run(move || {
            let mut request = ChatRequest::parse_offering(&parse_json(&body)?, &pipelines)?;
            if request.token_type.is_none() {
                request.token_type = token_type;
            }
            let model = match request.model.as_deref() {
                Some(id) => models
                    .get(id)
                    .ok_or_else(|| ApiError::model_not_found(id))?,
                None => models
                    .default_model()
                    .ok_or_else(|| ApiError::unavailable("This server serves no model"))?,
            };
            let prompt = tracing::info_span!("session.prepare")
                .in_scope(|| prepare(&request, &model.text(), &model.tier.limits()))?;
            Ok((request, model, prompt))
        })
        .await
}

/// `X-Token-Type`, used when the body names no `token_type`.
fn header_token_type(req: &HttpRequest) -> Result<Option<TokenChoice>, ApiError> {
    let Some(v) = req.headers().get("x-token-type") else {
        return Ok(None);
    };
    match v.to_str().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Ok("spark") => Ok(Some(TokenChoice::Spark)),
        Ok("sogni") => Ok(Some(TokenChoice::Sogni)),
        Ok("auto") => Ok(Some(TokenChoice::Auto)),
        _ => Err(ApiError::invalid(
            "X-Token-Type",
            "the X-Token-Type header must be spark, sogni or auto",
        )),
    }
}

/// `scheme://host` as the client reached this server, for the media URLs in responses.
pub fn origin(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// One choice once its turn is done: the message, its finish reason, the usage and what
/// hosted calls produced (when the tool loop ran).
type Collected = (AssistantMessage, &'static str, Usage, Option<HostedOutcome>);

/// One choice's message, once its turn is done.
async fn collect(
    mut events: UnboundedReceiver<SessionEvent>,
    logprobs: bool,
) -> Result<Collected, ApiError> {
    let mut message = AssistantMessage {
        logprobs: logprobs.then(Vec::new),
        ..AssistantMessage::default()
    };
    let mut hosted = None;
    loop {
        match events.recv().await {
            Some(SessionEvent::Delta(d, _)) => message.apply(d),
            Some(SessionEvent::Done {
                finish,
                tool_calls,
                usage,
            }) => return Ok((message, finish_reason(finish, tool_calls), usage, hosted)),
            Some(SessionEvent::Error(e)) => return Err(e),
            Some(SessionEvent::Hosted(o)) => hosted = Some(*o),
            Some(SessionEvent::Started | SessionEvent::ToolProgress(_)) => {}
            None => return Err(ApiError::logged("the session", "ended without a result")),
        }
    }
}

/// The non-streaming response, once every choice is done. Usage counts the shared prompt
/// once and every choice's completion.
async fn whole(
    choices: Vec<UnboundedReceiver<SessionEvent>>,
    id: &CompletionId,
    logprobs: bool,
) -> Result<HttpResponse, ApiError> {
    let done = futures_util::future::try_join_all(
        choices.into_iter().map(|events| collect(events, logprobs)),
    )
    .await?;
    let usage = Usage {
        prompt_tokens: done.first().map_or(0, |(_, _, u, _)| u.prompt_tokens),
        completion_tokens: done.iter().map(|(_, _, u, _)| u.completion_tokens).sum(),
    };
    let choices: Vec<Choice> = done
        .iter()
        .map(|(message, finish_reason, _, _)| Choice {
            message,
            finish_reason,
        })
        .collect();
    let mut response = id.response(&choices, usage);
    if let Some(hosted) = done.first().and_then(|(_, _, _, h)| h.as_ref()) {
        hosted.add_to(&mut response);
    }
    Ok(HttpResponse::Ok().json(response))
}

/// The SSE response: each choice's role chunk, then the choices' deltas as they come (each
/// chunk names its choice), each one's finish chunk, the usage chunk when asked for, then
/// `[DONE]`. Chunks that are ready together go out in one write.
fn sse(
    choices: Vec<UnboundedReceiver<SessionEvent>>,
    id: Arc<CompletionId>,
    include_usage: bool,
) -> HttpResponse {
    let roles: String = (0..choices.len())
        .map(|i| sse_event(&id.role_chunk(i)))
        .collect();
    let first = stream::once(std::future::ready(Ok::<_, actix_web::Error>(Bytes::from(
        roles,
    ))));
    let relay = Relay {
        id,
        include_usage,
        running: choices.len(),
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
        },
        last_delay: None,
        hosted: None,
    };
    // Each choice's events up to its last (`Done` or `Error`), or a `None` if its session
    // is gone before that.
    let merged = stream::select_all(choices.into_iter().enumerate().map(|(i, events)| {
        stream::unfold(Some(events), move |events| async move {
            let mut events = events?;
            let event = events.recv().await;
            let more = matches!(
                event,
                Some(
                    SessionEvent::Started
                        | SessionEvent::Delta(..)
                        | SessionEvent::ToolProgress(_)
                        | SessionEvent::Hosted(_)
                )
            )
            .then_some(events);
            Some(((i, event), more))
        })
        .boxed()
    }))
    .ready_chunks(256);
    let rest = stream::unfold(Some((merged, relay)), |state| async move {
        let (mut merged, mut relay) = state?;
        let mut frames = String::new();
        let ready = merged.next().await?;
        for (index, event) in ready {
            if !relay.frame(&mut frames, index, event) {
                return Some((Ok(Bytes::from(frames)), None));
            }
        }
        Some((Ok(Bytes::from(frames)), Some((merged, relay))))
    });
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .streaming(first.chain(rest))
}

/// One stream's framing of its choices' events, and the timing of each piece of text it
/// relays.
struct Relay {
    id: Arc<CompletionId>,
    include_usage: bool,
    /// Choices not done yet.
    running: usize,
    /// The usage of the choices done so far (the prompt counted once).
    usage: Usage,
    /// The token delay of the stream's previous piece of text.
    last_delay: Option<Duration>,
    /// What hosted calls produced, for the finish chunk.
    hosted: Option<HostedOutcome>,
}

impl Relay {
    /// Appends the SSE text of choice `index`'s `event` (`None`: its session is gone) to
    /// `frames`; false once the stream is over.
    fn frame(&mut self, frames: &mut String, index: usize, event: Option<SessionEvent>) -> bool {
        match event {
            Some(SessionEvent::Started) => return true,
            Some(SessionEvent::ToolProgress(p)) => {
                let progress = serde_json::to_value(&p).unwrap_or_default();
                frames.push_str(&sse_event(&self.id.progress_chunk(index, progress)));
                return true;
            }
            Some(SessionEvent::Hosted(o)) => {
                self.hosted = Some(*o);
                return true;
            }
            Some(SessionEvent::Delta(d, arrival)) => {
                frames.push_str(&self.id.delta_event(index, &d));
                self.timed(&arrival);
                return true;
            }
            Some(SessionEvent::Done {
                finish,
                tool_calls,
                usage,
            }) => {
                let mut chunk = self
                    .id
                    .finish_chunk(index, finish_reason(finish, tool_calls));
                if let Some(hosted) = self.hosted.take() {
                    hosted.add_to(&mut chunk);
                }
                frames.push_str(&sse_event(&chunk));
                self.usage.prompt_tokens = self.usage.prompt_tokens.max(usage.prompt_tokens);
                self.usage.completion_tokens += usage.completion_tokens;
                self.running -= 1;
                if self.running > 0 {
                    return true;
                }
                if self.include_usage {
                    frames.push_str(&sse_event(&self.id.usage_chunk(self.usage)));
                }
                frames.push_str(SSE_DONE);
            }
            Some(SessionEvent::Error(e)) => frames.push_str(&stream_error(&e)),
            None => frames.push_str(&stream_error(&ApiError::logged(
                "the session",
                "ended mid-stream",
            ))),
        }
        false
    }

    /// Observes the relay, the token delay, and how much longer than its gap on the bus the
    /// gap before this piece of text became (its delay less the previous one's).
    fn timed(&mut self, arrival: &Arrival) {
        let front = metrics::front();
        front.relay.observe(arrival.read.elapsed().as_secs_f64());
        let Some(at) = arrival.appended else { return };
        // `at` is the middle of its millisecond: earlier than that reads as no delay.
        let delay = std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or_default();
        front.token_delay.observe(delay.as_secs_f64());
        if let Some(last) = self.last_delay.replace(delay) {
            front
                .gap_added
                .observe(delay.saturating_sub(last).as_secs_f64());
        }
    }
}

/// An error after streaming began: an error event, then `[DONE]`.
fn stream_error(e: &ApiError) -> String {
    count_error(e);
    sse_event(&e.envelope()) + SSE_DONE
}
