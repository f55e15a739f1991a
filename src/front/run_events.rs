//! `GET /v1/chat/runs/{id}/events/stream`: a run's events as SSE (`id:` the sequence,
//! `event:` the type, `data:` the event). It replays what the log holds after
//! `Last-Event-ID` (or `?after=N`; everything without either), then follows the log live,
//! on whichever front the client reached, and closes after the run's last event. While
//! nothing happens an `event: run_status` frame (which the SDKs skip) keeps the connection
//! alive.

use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::creative::{authenticated, sogni_error};
use super::runs::load;
use super::FrontState;
use crate::api::error::ApiError;
use crate::runs::event::RunEvent;

/// How long the stream may be silent before a `run_status` frame.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `?after=N`, if given.
pub fn after_query(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let after =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("after").cloned());
    after
        .map(|a| {
            a.trim().parse::<u64>().map_err(|_| {
                ApiError::invalid(
                    "after",
                    "`after` must be an event sequence (a whole number)",
                )
            })
        })
        .transpose()
}

/// Where the replay starts: `Last-Event-ID`, else `?after`.
pub fn cursor(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    match req.headers().get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    "Last-Event-ID",
                    "`Last-Event-ID` must be an event sequence (a whole number)",
                )
            }),
        None => after_query(req),
    }
}

fn frame(e: &RunEvent) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        e.sequence, e.kind
    ))
}

/// The stream's state once the replay is sent.
struct Live {
    events: UnboundedReceiver<RunEvent>,
    run_id: String,
    status: String,
    ended: bool,
}

pub async fn stream(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    let opened = async {
        let key = authenticated(&req, &state).await?;
        let after = cursor(&req)?;
        let (_, st) = load(&state.services, &key, &id).await?;
        Ok::<_, ApiError>((after, st))
    }
    .await;
    let (after, st) = match opened {
        Ok(o) => o,
        Err(e) => return sogni_error(&e),
    };
    let replay: Vec<&RunEvent> = st
        .events
        .iter()
        .filter(|e| after.is_none_or(|a| e.sequence > a))
        .collect();
    let ended = st.is_terminal();
    let frames: Vec<Result<Bytes, actix_web::Error>> =
        replay.iter().map(|e| Ok(frame(e))).collect();
    let last = st.next_sequence().saturating_sub(1).max(after.unwrap_or(0));
    let live = Live {
        // A finished run replays and closes: nothing is followed.
        events: state.services.runs.followers.follow(&id, Some(last)),
        run_id: id.to_string(),
        status: st.status.clone(),
        ended,
    };
    let live = stream::unfold(live, |mut l| async move {
        if l.ended {
            return None;
        }
        let out = match tokio::time::timeout(KEEP_ALIVE, l.events.recv()).await {
            Ok(Some(e)) => {
                l.ended = e.is_terminal();
                l.status = e.kind.clone();
                frame(&e)
            }
            Ok(None) => return None,
            Err(_) => Bytes::from(format!(
                "event: run_status\ndata: {}\n\n",
                json!({"runId": l.run_id, "lastEvent": l.status})
            )),
        };
        Some((Ok::<_, actix_web::Error>(out), l))
    });
    sse(stream::iter(frames).chain(live))
}

/// An SSE response of `frames`, unbuffered by proxies.
pub fn sse(
    frames: impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(frames)
}
