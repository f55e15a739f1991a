//! Sends one chat completion and times it: when each streamed chunk with output arrived,
//! when the response ended, what `usage` said, and how it failed if it did (HTTP status and
//! the OpenAI error envelope's `type`, or a transport failure).

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::time::Instant;

use futures_util::StreamExt;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::mix::Body;

/// How one request went. Times are milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Time to the first chunk with output (streamed requests only).
    pub ttft: Option<f64>,
    /// Gaps between successive chunks with output.
    pub itl: Vec<f64>,
    pub e2e: f64,
    pub prompt_tokens: u64,
    /// From `usage`; without it, the chunks with output.
    pub output_tokens: u64,
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status; 0 when no response came (connect, timeout, broken stream).
    pub status: u16,
    /// The error envelope's `type`, or what went wrong in transport.
    pub kind: String,
    pub message: String,
}

impl Failure {
    fn transport(e: &reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else if e.is_body() || e.is_decode() {
            "stream"
        } else {
            "transport"
        };
        Self {
            status: 0,
            kind: kind.into(),
            message: e.to_string(),
        }
    }

    /// From an error envelope `{"error": {"type", "message"}}` (or any body).
    fn from_body(status: u16, body: &str) -> Self {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let e = &v["error"];
        let kind = e["type"]
            .as_str()
            .or_else(|| e["code"].as_str())
            .unwrap_or("http_error")
            .to_string();
        let message = e["message"]
            .as_str()
            .map_or_else(|| body.chars().take(200).collect(), str::to_string);
        Self {
            status,
            kind,
            message,
        }
    }
}

/// Sends `body` to `{base}/chat/completions`; never fails, the outcome says how it went.
pub async fn send(http: &reqwest::Client, base: &str, key: &str, body: &Body) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome::default();
    let post = || {
        authorized(http.post(format!("{base}/chat/completions")), key)
            .json(&body.json)
            .send()
    };
    // A pooled connection the server closed while idle (llama-server does) fails before the
    // request is sent; that one is sent again, on a new connection, and timed from the first.
    let response = match post().await {
        Err(e) if e.is_request() && !e.is_timeout() => post().await,
        r => r,
    };
    let result = match response {
        Err(e) => Err(Failure::transport(&e)),
        Ok(r) if !r.status().is_success() => {
            let status = r.status().as_u16();
            Err(Failure::from_body(
                status,
                &r.text().await.unwrap_or_default(),
            ))
        }
        Ok(r) if body.stream => read_stream(r, start, &mut out).await,
        Ok(r) => read_whole(r, &mut out).await,
    };
    out.e2e = ms(start);
    out.failure = result.err();
    out
}

/// Adds the bearer token, unless there is none (llama-server needs none).
pub fn authorized(r: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
    if key.is_empty() {
        r
    } else {
        r.bearer_auth(key)
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

async fn read_whole(r: reqwest::Response, out: &mut Outcome) -> Result<(), Failure> {
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| Failure::transport(&e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Failure {
        status,
        kind: "bad_response".into(),
        message: e.to_string(),
    })?;
    out.prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    out.output_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    Ok(())
}

/// Reads server-sent events until `[DONE]`, timing every chunk that carries output.
async fn read_stream(
    r: reqwest::Response,
    start: Instant,
    out: &mut Outcome,
) -> Result<(), Failure> {
    let status = r.status().as_u16();
    let mut bytes = r.bytes_stream();
    let mut events = EventSplitter::default();
    let (mut chunks, mut last) = (0u64, None::<Instant>);
    let mut usage = None;
    while let Some(piece) = bytes.next().await {
        let piece = piece.map_err(|e| Failure::transport(&e))?;
        let now = Instant::now();
        let flow = events.push(&piece, |data| {
            if data == "[DONE]" {
                return ControlFlow::Break(Ok(()));
            }
            // Only the fields timed are read: at tens of thousands of chunks a second a JSON
            // tree per chunk would cost the harness more than the server it measures.
            let chunk: Chunk = match serde_json::from_str(data) {
                Ok(c) => c,
                Err(e) => {
                    return ControlFlow::Break(Err(Failure {
                        status,
                        kind: "bad_event".into(),
                        message: format!("{e}: {data}"),
                    }))
                }
            };
            if chunk.error.is_some() {
                return ControlFlow::Break(Err(Failure::from_body(status, data)));
            }
            if let Some(UsageCounts {
                completion_tokens: Some(n),
                prompt_tokens,
            }) = chunk.usage
            {
                usage = Some(n);
                out.prompt_tokens = prompt_tokens.unwrap_or(0);
            }
            if chunk.has_output() {
                chunks += 1;
                match last {
                    None => out.ttft = Some((now - start).as_secs_f64() * 1e3),
                    Some(prev) => out.itl.push((now - prev).as_secs_f64() * 1e3),
                }
                last = Some(now);
            }
            ControlFlow::Continue(())
        });
        if let ControlFlow::Break(end) = flow {
            if end.is_ok() {
                out.output_tokens = usage.unwrap_or(chunks);
            }
            return end;
        }
    }
    Err(Failure {
        status,
        kind: "stream".into(),
        message: "the stream ended without [DONE]".into(),
    })
}

/// What the harness reads of a streamed chunk.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    usage: Option<UsageCounts>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    tool_calls: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
struct UsageCounts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl Chunk<'_> {
    /// A chunk carries output when its delta has text, reasoning or a tool call.
    fn has_output(&self) -> bool {
        let Some(d) = self.choices.first().and_then(|c| c.delta.as_ref()) else {
            return false;
        };
        let text = |t: &Option<Cow<str>>| t.as_deref().is_some_and(|s| !s.is_empty());
        text(&d.content)
            || text(&d.reasoning_content)
            || d.tool_calls.as_ref().is_some_and(|a| !a.is_empty())
    }
}

/// Splits a byte stream into the `data` of server-sent events (events end at a blank line;
/// several `data:` lines join with newlines; comments and other fields are skipped).
#[derive(Default)]
pub struct EventSplitter {
    buf: Vec<u8>,
}

impl EventSplitter {
    /// Takes the next bytes and hands `each` the data of every event they complete, in
    /// order, until it breaks. An event of one `data:` line (every chunk of a chat
    /// completion) is handed over without copying.
    pub fn push<B>(
        &mut self,
        bytes: &[u8],
        mut each: impl FnMut(&str) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        self.buf.extend_from_slice(bytes);
        let (mut start, mut flow) = (0, ControlFlow::Continue(()));
        while let Some((end, skip)) = event_end(&self.buf[start..]) {
            let raw = &self.buf[start..start + end];
            start += end + skip;
            flow = match std::str::from_utf8(raw) {
                Ok(text) => event_data(text, &mut each),
                Err(_) => event_data(&String::from_utf8_lossy(raw), &mut each),
            };
            if flow.is_break() {
                break;
            }
        }
        self.buf.drain(..start);
        flow
    }
}

/// Hands `each` the data of one event's text, if it has any.
fn event_data<B>(text: &str, each: &mut impl FnMut(&str) -> ControlFlow<B>) -> ControlFlow<B> {
    let mut lines = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d));
    match (lines.next(), lines.next()) {
        (None, _) => ControlFlow::Continue(()),
        (Some(only), None) => each(only),
        (Some(first), Some(second)) => {
            let mut data = format!("{first}\n{second}");
            for line in lines {
                data.push('\n');
                data.push_str(line);
            }
            each(&data)
        }
    }
}

/// Where the first event ends, and the length of the blank line that ends it.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data of the events `bytes` completes.
    fn split(s: &mut EventSplitter, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        let _ = s.push::<()>(bytes, |d| {
            events.push(d.to_string());
            ControlFlow::Continue(())
        });
        events
    }

    #[test]
    fn events_split_across_reads_and_line_endings() {
        let mut s = EventSplitter::default();
        assert!(split(&mut s, b"data: {\"a\"").is_empty());
        assert_eq!(
            split(&mut s, b":1}\n\n: ping\n\ndata: x\r\n\r\ndata: [DO"),
            vec!["{\"a\":1}", "x"]
        );
        assert_eq!(split(&mut s, b"NE]\n\n"), vec!["[DONE]"]);
        assert_eq!(
            split(&mut s, b"event: e\ndata: one\ndata: two\n\ndata: caf\xc3"),
            vec!["one\ntwo"]
        );
        assert_eq!(split(&mut s, b"\xa9 \xff\n\n"), vec!["caf\u{e9} \u{fffd}"]);
    }

    #[test]
    fn a_break_stops_at_its_event() {
        let mut s = EventSplitter::default();
        let mut seen = Vec::new();
        let flow = s.push(b"data: 1\n\ndata: 2\n\ndata: 3\n\n", |d| {
            seen.push(d.to_string());
            if d == "2" {
                ControlFlow::Break(d.len())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(
            (flow, seen),
            (
                ControlFlow::Break(1),
                vec!["1".to_string(), "2".to_string()]
            )
        );
    }

    #[test]
    fn output_is_text_reasoning_or_tool_calls() {
        let has_output = |chunk: &str| {
            serde_json::from_str::<Chunk>(chunk)
                .expect("a chunk")
                .has_output()
        };
        assert!(has_output(
            r#"{"choices":[{"delta":{"content":"hi \"there\""}}]}"#
        ));
        assert!(has_output(
            r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#
        ));
        assert!(has_output(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#
        ));
        assert!(!has_output(
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(!has_output(r#"{"choices":[{"delta":{"content":null}}]}"#));
        assert!(!has_output(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#
        ));
        assert!(serde_json::from_str::<Chunk>(r#"{"error":{"type":"x"}}"#)
            .expect("an error chunk")
            .error
            .is_some());
    }

    #[test]
    fn failures_read_the_error_envelope() {
        let f = Failure::from_body(
            429,
            r#"{"error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        assert_eq!(
            (f.status, f.kind.as_str(), f.message.as_str()),
            (429, "rate_limit_error", "slow down")
        );
        let f = Failure::from_body(502, "bad gateway");
        assert_eq!(
            (f.kind.as_str(), f.message.as_str()),
            ("http_error", "bad gateway")
        );
    }
}
