//! The model's raw text split into what OpenAI's clients expect: `content`,
//! `reasoning_content` (what the model wrote inside `<think>...</think>`) and `tool_calls`
//! (each `<tool_call>{"name": ..., "arguments": ...}</tool_call>` block), as the text streams.
//!
//! None of the markup ever reaches `content`: text that may be the start of a tag is held
//! back until it is known not to be. A call is announced (index, id, name) as soon as its
//! name is complete, and its arguments follow in fragments; the fragments joined are exactly
//! the arguments object the model wrote, and nothing of the wrapper after it, even when the
//! output is cut mid-call. Whitespace between calls is not content.

use serde_json::Value;

use crate::api::chat_response::Delta;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Content,
    Think,
    /// Inside a call, before its name is known.
    CallHead,
    /// Inside a call whose arguments are streaming.
    CallArguments,
}

pub struct Markup {
    state: State,
    /// Whether `<tool_call>` blocks are calls (the request offered tools) or just text.
    tools: bool,
    /// Text not yet classified.
    pending: String,
    /// Calls announced so far.
    calls: usize,
    /// Content is about to begin after `</think>`: its leading whitespace is dropped.
    after_think: bool,
    /// The current call's arguments, as far as they are read.
    arguments: ArgumentsEnd,
    new_id: Box<dyn FnMut() -> String + Send>,
}

impl Markup {
    /// `tools`: parse tool calls; `thinking`: the prompt opened a `<think>` block, so the
    /// output starts inside it. `new_id` names each call.
    pub fn new(tools: bool, thinking: bool, new_id: Box<dyn FnMut() -> String + Send>) -> Self {
        Self {
            state: if thinking {
                State::Think
            } else {
                State::Content
            },
            tools,
            pending: String::new(),
            calls: 0,
            after_think: false,
            arguments: ArgumentsEnd::default(),
            new_id,
        }
    }

    /// Whether any tool call was made.
    pub fn made_calls(&self) -> bool {
        self.calls > 0
    }

    /// Takes more of the model's text; returns what can be said now.
    pub fn push(&mut self, text: &str) -> Vec<Delta> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        while self.step(&mut out, false) {}
        out
    }

    /// The text ended: says what was held back.
    pub fn finish(&mut self) -> Vec<Delta> {
        let mut out = Vec::new();
        while self.step(&mut out, true) {}
        out
    }

    /// Moves forward once; true if the state changed and there may be more to do.
    fn step(&mut self, out: &mut Vec<Delta>, end: bool) -> bool {
        match self.state {
            State::Content => {
                let tags: &[&str] = if self.tools {
                    &[THINK_OPEN, CALL_OPEN]
                } else {
                    &[THINK_OPEN]
                };
                if self.after_think {
                    let trimmed = self.pending.trim_start().len();
                    self.pending.drain(..self.pending.len() - trimmed);
                    self.after_think = self.pending.is_empty();
                }
                match find_first(&self.pending, tags) {
                    Some((at, tag)) => {
                        let before: String =
                            self.pending.drain(..at + tag.len()).take(at).collect();
                        // Whitespace before a call is not content.
                        let before = if tag == CALL_OPEN {
                            before.trim_end()
                        } else {
                            &before
                        };
                        push_text(out, Delta::Content(before.to_string()));
                        self.state = if tag == THINK_OPEN {
                            State::Think
                        } else {
                            State::CallHead
                        };
                        true
                    }
                    None if end => {
                        let text = std::mem::take(&mut self.pending);
                        // Nor is whitespace after the calls.
                        let text = if self.made_calls() {
                            text.trim_end()
                        } else {
                            &text
                        };
                        push_text(out, Delta::Content(text.to_string()));
                        false
                    }
                    None => {
                        // Hold back a partial tag, and whitespace until it is followed by content.
                        let keep = partial_tag(&self.pending, tags);
                        let say = self.pending[..self.pending.len() - keep].trim_end().len();
                        let text = self.pending.drain(..say).collect();
                        push_text(out, Delta::Content(text));
                        false
                    }
                }
            }
            State::Think => match self.pending.find(THINK_CLOSE) {
                Some(at) => {
                    let text: String = self
                        .pending
                        .drain(..at + THINK_CLOSE.len())
                        .take(at)
                        .collect();
                    push_text(out, Delta::Reasoning(text));
                    self.state = State::Content;
                    self.after_think = true;
                    true
                }
                None => {
                    let keep = if end {
                        0
                    } else {
                        partial_tag(&self.pending, &[THINK_CLOSE])
                    };
                    let text = self.pending.drain(..self.pending.len() - keep).collect();
                    push_text(out, Delta::Reasoning(text));
                    false
                }
            },
            State::CallHead => match call_head(&self.pending) {
                Some((name, len)) => {
                    self.pending.drain(..len);
                    out.push(Delta::ToolCall {
                        index: self.calls,
                        id: (self.new_id)(),
                        name,
                    });
                    self.calls += 1;
                    self.arguments = ArgumentsEnd::default();
                    self.state = State::CallArguments;
                    true
                }
                None if end || self.pending.contains(CALL_CLOSE) => {
                    // Not a call we can read (the output was cut short): drop it, never show it as content.
                    tracing::warn!(text = %self.pending, "dropping an unreadable tool call");
                    let close = self
                        .pending
                        .find(CALL_CLOSE)
                        .map_or(self.pending.len(), |at| at + CALL_CLOSE.len());
                    self.pending.drain(..close);
                    self.state = State::Content;
                    !end
                }
                None => false,
            },
            State::CallArguments => {
                if !self.arguments.done {
                    let n = self.arguments.scan(&self.pending);
                    let fragment = self.pending.drain(..n).collect();
                    push_text(
                        out,
                        Delta::Arguments {
                            index: self.calls - 1,
                            fragment,
                        },
                    );
                    if !self.arguments.done {
                        return false;
                    }
                }
                // The arguments object is closed: the rest of the call is the wrapper's
                // (its `}` and `</tool_call>`), never arguments.
                match self.pending.find(CALL_CLOSE) {
                    Some(at) => {
                        self.pending.drain(..at + CALL_CLOSE.len());
                        self.state = State::Content;
                        true
                    }
                    None => {
                        let keep = if end {
                            0
                        } else {
                            partial_tag(&self.pending, &[CALL_CLOSE])
                        };
                        self.pending.drain(..self.pending.len() - keep);
                        false
                    }
                }
            }
        }
    }
}

/// Where a call's arguments object ends: it follows the object's nesting through strings
/// and escapes, so the text after its closing brace (the wrapper's) is never taken for
/// arguments, whether the call closed or the output was cut.
#[derive(Default)]
struct ArgumentsEnd {
    depth: usize,
    in_string: bool,
    escaped: bool,
    done: bool,
}

impl ArgumentsEnd {
    /// How many bytes at the start of `text` (the next unread part of the arguments) belong
    /// to them; sets `done` when the object closes within them.
    fn scan(&mut self, text: &str) -> usize {
        for (i, b) in text.bytes().enumerate() {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.done = true;
                        return i + 1;
                    }
                }
                _ => {}
            }
        }
        text.len()
    }
}

/// Appends a text delta unless it is empty.
fn push_text(out: &mut Vec<Delta>, d: Delta) {
    let empty = match &d {
        Delta::Content(t) | Delta::Reasoning(t) => t.is_empty(),
        Delta::Arguments { fragment, .. } => fragment.is_empty(),
        Delta::Logprobs(entries) => entries.is_empty(),
        Delta::ToolCall { .. } => false,
    };
    if !empty {
        out.push(d);
    }
}

/// The earliest of `tags` in `text`, and where.
fn find_first<'a>(text: &str, tags: &[&'a str]) -> Option<(usize, &'a str)> {
    tags.iter()
        .filter_map(|t| text.find(t).map(|at| (at, *t)))
        .min_by_key(|(at, _)| *at)
}

/// The length of the longest tail of `text` that is a proper prefix of one of `tags`.
fn partial_tag(text: &str, tags: &[&str]) -> usize {
    tags.iter()
        .flat_map(|t| {
            (1..t.len())
                .rev()
                .filter(|&n| {
                    n <= text.len()
                        && text.is_char_boundary(text.len() - n)
                        && t.starts_with(&text[text.len() - n..])
                })
                .take(1)
        })
        .max()
        .unwrap_or(0)
}

/// `{"name": "NAME", "arguments": ` at the start of a call (whitespace allowed around each
/// part): the name and the length of the head.
fn call_head(s: &str) -> Option<(String, usize)> {
    let mut rest = s
        .trim_start()
        .strip_prefix('{')?
        .trim_start()
        .strip_prefix("\"name\"")?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    // The name is a JSON string; read it with a JSON parser so escapes are honoured.
    let mut de = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    let name = match de.next()? {
        Ok(Value::String(name)) => name,
        _ => return None,
    };
    rest = rest[de.byte_offset()..]
        .trim_start()
        .strip_prefix(',')?
        .trim_start()
        .strip_prefix("\"arguments\"")?
        .trim_start()
        .strip_prefix(':')?;
    let rest = rest.trim_start();
    // The arguments must have begun, so the head is complete.
    rest.starts_with('{').then(|| (name, s.len() - rest.len()))
}

#[cfg(test)]
mod tests;
