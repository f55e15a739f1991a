//! The simulator's made-up model, as GGUF metadata: a byte-level vocabulary (one token per
//! byte, no merges) with ChatML's two control tokens and template. Fronts read it like any
//! model card, so a simulated pool exercises the real prompt rendering and tokenizing path
//! without any model file on the machine.

use crate::engine::gguf::write::metadata_file;
use crate::engine::gguf::Value;

/// The model id simulated workers serve.
pub const MODEL_ID: &str = "simulated";
/// Positions a simulated sequence may use.
pub const CONTEXT: usize = 32_768;
pub const ARCHITECTURE: &str = "simulated";

const TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Token ids of the control tokens, after the 256 byte tokens.
pub const IM_START: u32 = 256;
pub const IM_END: u32 = 257;

/// The GGUF metadata of the simulated model.
pub fn metadata() -> Vec<u8> {
    let mut tokens: Vec<Value> = (0..=255u8)
        .map(|b| Value::String(byte_char(b).to_string()))
        .collect();
    tokens.extend(["<|im_start|>", "<|im_end|>"].map(|t| Value::String(t.into())));
    let mut types = vec![Value::I32(1); 256];
    types.extend([Value::I32(3), Value::I32(3)]);
    let s = |v: &str| Value::String(v.into());
    metadata_file(&[
        ("general.architecture", s(ARCHITECTURE)),
        ("general.name", s("supernet worker simulator (no model)")),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("gpt-2")),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(Vec::new())),
        ("tokenizer.ggml.bos_token_id", Value::U32(IM_START)),
        ("tokenizer.ggml.eos_token_id", Value::U32(IM_END)),
        ("tokenizer.chat_template", s(TEMPLATE)),
    ])
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the others are
/// shifted to code points from 256 up, in byte order.
pub fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return char::from(b);
    }
    let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shifted).unwrap_or('?')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gguf::GgufFile;
    use crate::engine::template::ChatTemplate;
    use crate::engine::tokenizer::Tokenizer;

    /// A front can tokenize and render prompts with the card, and every byte is one token.
    #[test]
    fn the_card_tokenizes_and_renders() {
        let f = GgufFile::from_bytes("simulated", &metadata()).unwrap();
        let tok = Tokenizer::from_gguf(&f).unwrap();
        assert_eq!(tok.encode_plain("héllo!").unwrap().len(), "héllo!".len());
        assert_eq!(
            tok.encode_plain("<|im_start|>user\nhi<|im_end|>").unwrap()[0],
            IM_START
        );
        ChatTemplate::from_gguf(&f, &tok).unwrap();
        assert_eq!(tok.vocab_size(), 258);
        assert_eq!(
            (byte_char(b'a'), byte_char(0), byte_char(b' ')),
            ('a', 'Ā', 'Ġ')
        );
    }
}
