//! The markup parser's cases, each fed in pieces of many sizes, since where the model's text
//! is cut must never change what comes out.

use super::*;

fn ids() -> Box<dyn FnMut() -> String + Send> {
    let mut n = 0;
    Box::new(move || {
        n += 1;
        format!("call_{n}")
    })
}

/// Feeds `text` in pieces of `size` bytes (at char boundaries) and joins the deltas of each kind.
fn run(
    tools: bool,
    thinking: bool,
    text: &str,
    size: usize,
) -> (String, String, Vec<(String, String, String)>) {
    let mut m = Markup::new(tools, thinking, ids());
    let mut deltas = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        deltas.extend(m.push(&rest[..cut]));
        rest = &rest[cut..];
    }
    deltas.extend(m.finish());
    let (mut content, mut reasoning, mut calls) = (
        String::new(),
        String::new(),
        Vec::<(String, String, String)>::new(),
    );
    for d in deltas {
        match d {
            Delta::Content(t) => content.push_str(&t),
            Delta::Reasoning(t) => reasoning.push_str(&t),
            Delta::ToolCall { index, id, name } => {
                assert_eq!(index, calls.len(), "calls are announced in order");
                calls.push((id, name, String::new()));
            }
            Delta::Arguments { index, fragment } => calls[index].2.push_str(&fragment),
            Delta::Logprobs(_) => unreachable!("the markup parser makes no logprobs"),
        }
    }
    (content, reasoning, calls)
}

#[test]
fn calls_parse_the_same_however_the_text_is_cut() {
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": {\"a\": [1, 2]}}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n";
    for size in [1, 2, 3, 5, 7, 16, 1000] {
        let (content, reasoning, calls) = run(true, false, text, size);
        assert_eq!(content, "Let me check.", "size {size}");
        assert_eq!(reasoning, "");
        assert_eq!(
            calls,
            [
                (
                    "call_1".to_string(),
                    "get_weather".to_string(),
                    "{\"city\": \"Paris\", \"n\": {\"a\": [1, 2]}}".to_string()
                ),
                ("call_2".to_string(), "now".to_string(), "{}".to_string())
            ],
            "size {size}"
        );
    }
}

#[test]
fn think_blocks_become_reasoning_and_never_content() {
    for size in [1, 3, 100] {
        let (content, reasoning, calls) = run(
            false,
            false,
            "<think>\nplan a < b</think>\n\nThe answer is 4.",
            size,
        );
        assert_eq!(
            (content.as_str(), reasoning.as_str(), calls.len()),
            ("The answer is 4.", "\nplan a < b", 0),
            "size {size}"
        );
        // The prompt opened the block: the output starts inside it.
        let (content, reasoning, _) = run(false, true, "hmm</think>Yes", size);
        assert_eq!((content.as_str(), reasoning.as_str()), ("Yes", "hmm"));
    }
}

#[test]
fn text_that_only_looks_like_a_tag_is_content() {
    let (content, _, calls) = run(true, false, "a <b> and <tool and <thin", 2);
    assert_eq!(
        (content.as_str(), calls.len()),
        ("a <b> and <tool and <thin", 0)
    );
    // Without tools, call markup is plain text.
    let (content, _, calls) = run(false, false, "x <tool_call>{}</tool_call>", 4);
    assert_eq!(
        (content.as_str(), calls.len()),
        ("x <tool_call>{}</tool_call>", 0)
    );
}

#[test]
fn a_cut_short_call_never_leaks_into_content() {
    let (content, _, calls) = run(true, false, "<tool_call>\n{\"name\": \"f\", \"argu", 3);
    assert_eq!((content.as_str(), calls.len()), ("", 0));
    // Announced calls keep the arguments written so far (finish_reason tells it was cut).
    let (content, _, calls) = run(
        true,
        false,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1",
        3,
    );
    assert_eq!((content.as_str(), calls[0].2.as_str()), ("", "{\"a\": 1"));
}

#[test]
fn plain_text_keeps_its_whitespace() {
    let (content, _, _) = run(true, false, "  two\n\nlines \n", 1);
    assert_eq!(content, "  two\n\nlines \n");
}

#[test]
fn a_call_cut_after_its_arguments_never_leaks_the_wrapper_into_them() {
    let args = "{\"city\": \"Pa}r\\\"is\", \"n\": [{\"a\": \"]\"}]}";
    let call = format!("<tool_call>\n{{\"name\": \"f\", \"arguments\": {args}}}\n</tool_call>");
    // Every cut of the wrapper after the arguments, and none.
    for cut in 0..=(call.len() - call.find(args).unwrap() - args.len()) {
        let text = &call[..call.len() - cut];
        for size in [1, 2, 5, 1000] {
            let (content, _, calls) = run(true, false, text, size);
            assert_eq!(content, "", "cut {cut} size {size}");
            assert_eq!(calls[0].2, args, "cut {cut} size {size}");
        }
    }
}
