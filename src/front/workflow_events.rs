//! A workflow's events: `GET /v1/creative-agent/workflows/{id}/events` and the SSE stream
//! (`id:` the sequence, `event:` the type, `data:` the wire event). The stream replays after
//! `Last-Event-ID` (or `?after`), then follows the log live on whichever front the client
//! reached; once the workflow ends or waits for its user it sends a `workflow_status` frame
//! with the status and closes.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::creative::{authenticated, success};
use super::runs::respond;
use super::workflows::load;
use super::FrontState;
use crate::api::error::ApiError;
use crate::runs::event::RunEvent;
use crate::workflows::state::wire;

/// How long the stream may be silent before a `workflow_status` keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/creative-agent/workflows/{id}/events`.
pub async fn events(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let key = authenticated(&req, &state).await?;
            let after = super::run_events::after_query(&req)?;
            let st = load(&state.services, &key, &id).await?;
            let events: Vec<Value> = st
                .events
                .iter()
                .filter(|e| after.is_none_or(|a| e.sequence > a))
                .map(|e| wire(&st.id, e))
                .collect();
            Ok(success(json!({"events": events})))
        }
        .await,
    )
}

/// Whether the stream closes after `e`: the workflow ended or waits for its user.
fn closes(e: &RunEvent) -> bool {
    crate::workflows::state::TERMINAL.contains(&e.kind.as_str())
        || e.kind == "workflow_waiting_for_user"
}

fn frame(id: &str, e: &RunEvent) -> Bytes {
    let data = wire(id, e).to_string();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        e.sequence, e.kind
    ))
}

fn status_frame(id: &str, status: &str) -> Bytes {
    Bytes::from(format!(
        "event: workflow_status\ndata: {}\n\n",
        json!({"workflowId": id, "status": status})
    ))
}

struct Live {
    events: tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    id: String,
    status: String,
    ended: bool,
}

/// `GET /v1/creative-agent/workflows/{id}/events/stream`: replay after `Last-Event-ID` or
/// `?after`, then live; a `workflow_status` frame with the status closes it once the
/// workflow ends or waits for its user.
pub async fn stream(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    let opened = async {
        let key = authenticated(&req, &state).await?;
        let after = super::run_events::cursor(&req)?;
        let st = load(&state.services, &key, &id).await?;
        Ok::<_, ApiError>((after, st))
    }
    .await;
    let (after, st) = match opened {
        Ok(o) => o,
        Err(e) => return super::creative::sogni_error(&e),
    };
    let mut frames: Vec<Bytes> = st
        .events
        .iter()
        .filter(|e| after.is_none_or(|a| e.sequence > a))
        .map(|e| frame(&st.id, e))
        .collect();
    let ended = st.events.last().is_some_and(closes);
    if ended {
        frames.push(status_frame(&st.id, &st.status));
    }
    let last = st.next_sequence().saturating_sub(1).max(after.unwrap_or(0));
    let live = Live {
        events: state.services.runs.followers.follow(&id, Some(last)),
        id: st.id.clone(),
        status: st.status.clone(),
        ended,
    };
    let live = stream::unfold(live, |mut l| async move {
        if l.ended {
            return None;
        }
        let out = match tokio::time::timeout(KEEP_ALIVE, l.events.recv()).await {
            Ok(Some(e)) => {
                if let Some(s) = e.payload["status"].as_str() {
                    l.status = s.to_string();
                }
                let mut out = frame(&l.id, &e).to_vec();
                if closes(&e) {
                    l.ended = true;
                    out.extend_from_slice(&status_frame(&l.id, &l.status));
                }
                Bytes::from(out)
            }
            Ok(None) => return None,
            Err(_) => Bytes::from(format!(
                "event: workflow_status\ndata: {}\n\n",
                json!({"workflowId": l.id, "status": l.status, "keepAlive": true})
            )),
        };
        Some((Ok::<_, actix_web::Error>(out), l))
    });
    super::run_events::sse(
        stream::iter(frames.into_iter().map(Ok::<_, actix_web::Error>)).chain(live),
    )
}
