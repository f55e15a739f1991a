//! Acceptance: tokenizer round trips on SmolLM2's vocabulary (multilingual text, emoji, code,
//! whitespace runs, special tokens), and streaming decode releasing only whole characters.

use crate::common;

use supernet::engine::gguf::GgufFile;
use supernet::engine::tokenizer::{StreamDecoder, Tokenizer};

fn smollm2() -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(common::smollm2()).expect("open")).expect("tokenizer")
}

const SAMPLES: &[&str] = &[
    "Grüße aus München! 世界你好。Привет, мир. مرحبا بالعالم. नमस्ते दुनिया. こんにちは",
    "👍🏽 🇫🇷 👨‍👩‍👧 🤖💬 ✨",
    "fn main() {\n\tlet x: Vec<u8> = vec![1, 2, 3];\n\tprintln!(\"{:?}\", x); // done\n}\n",
    "def f(a, b):\n    return a ** 2 + b  # comment\n",
    "a  b   \t\t c\n\n\n  d   ",
    "   leading and trailing   ",
    "\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi 👋<|im_end|>\n",
    "numbers 1234567890 3.14159 -42 1e-9",
];

#[test]
fn decode_of_encode_is_identity() {
    let tok = smollm2();
    for s in SAMPLES {
        let ids = tok.encode(s).expect("encode");
        assert_eq!(tok.decode(&ids), *s, "round trip of {s:?} via {ids:?}");
    }
}

#[test]
fn special_tokens_encode_as_single_ids() {
    let tok = smollm2();
    assert_eq!(tok.encode("<|im_start|>").unwrap(), vec![1]);
    assert_eq!(tok.encode("<|im_end|>").unwrap(), vec![2]);
    let ids = tok
        .encode("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    assert_eq!(
        ids,
        vec![1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198]
    );
    // SmolLM2 asks for no BOS.
    assert!(!tok.add_bos);
}

#[test]
fn streaming_decode_emits_only_complete_characters() {
    let tok = smollm2();
    for s in SAMPLES {
        let ids = tok.encode(s).unwrap();
        let mut dec = StreamDecoder::default();
        let mut out = String::new();
        for &id in &ids {
            let piece = dec.push(&tok, id);
            assert!(
                !piece.contains('\u{FFFD}'),
                "replacement character streamed for {s:?}"
            );
            out.push_str(&piece);
        }
        out.push_str(&dec.finish());
        assert_eq!(out, *s);
    }
    // An emoji's bytes spread over several byte-level tokens: nothing until it is whole.
    let ids = tok.encode("🤖").unwrap();
    assert!(
        ids.len() > 1,
        "expected the emoji to take several tokens: {ids:?}"
    );
    let mut dec = StreamDecoder::default();
    let pieces: Vec<String> = ids.iter().map(|&i| dec.push(&tok, i)).collect();
    assert!(
        pieces[..pieces.len() - 1].iter().all(String::is_empty),
        "{pieces:?}"
    );
    assert_eq!(pieces.last().unwrap(), "🤖");
}
