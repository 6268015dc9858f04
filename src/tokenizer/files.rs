//! Reading a tokenizer folder's files: vocabularies, merges, added and special tokens with the
//! flags transformers gives them, and the CLIP normalize/pre-tokenize/BPE pipeline.

use serde_json::{Map, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::*;
use crate::error::{Error, Result};

/// An added token as the config files describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TokenSpec {
    pub(super) content: String,
    pub(super) single_word: bool,
    pub(super) lstrip: bool,
    pub(super) rstrip: bool,
    pub(super) normalized: bool,
    pub(super) special: bool,
}

impl TokenSpec {
    /// A special token given as a plain string (transformers: `AddedToken(s, special=True)`).
    pub(super) fn special_str(content: &str) -> Self {
        TokenSpec {
            content: content.to_string(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
        }
    }

    pub(super) fn to_added(&self) -> AddedToken {
        AddedToken::from(self.content.clone(), self.special)
            .single_word(self.single_word)
            .lstrip(self.lstrip)
            .rstrip(self.rstrip)
            .normalized(self.normalized)
    }
}

/// A named special token: a plain string, or an `AddedToken` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SpecialValue {
    Str(String),
    Token(TokenSpec),
}

impl SpecialValue {
    pub(super) fn content(&self) -> &str {
        match self {
            SpecialValue::Str(s) => s,
            SpecialValue::Token(t) => &t.content,
        }
    }

    pub(super) fn to_spec(&self) -> TokenSpec {
        match self {
            SpecialValue::Str(s) => TokenSpec::special_str(s),
            SpecialValue::Token(t) => TokenSpec { special: true, ..t.clone() },
        }
    }
}

/// Names a file of the tokenizer folder for error messages.
pub(super) struct Names<'a> {
    pub(super) folder: &'a str,
}

impl Names<'_> {
    pub(super) fn file(&self, name: &str) -> String {
        if self.folder.is_empty() {
            name.to_string()
        } else {
            format!("{}/{}", self.folder.trim_end_matches(['/', '\\']), name)
        }
    }

    pub(super) fn err(&self, name: &str, reason: impl Into<String>) -> Error {
        Error::Tokenizer { file: self.file(name), reason: reason.into() }
    }
}

pub(super) fn parse_json_object(text: &str, names: &Names, name: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(names.err(name, "not a JSON object")),
        Err(e) => Err(names.err(name, format!("invalid JSON: {e}"))),
    }
}

pub(super) fn json_bool(obj: &Map<String, Value>, key: &str) -> Option<bool> {
    obj.get(key).and_then(Value::as_bool)
}

/// An `AddedToken` object (`{"content": ..., "lstrip": ..., ...}`).
pub(super) fn parse_token_spec(value: &Value, names: &Names, name: &str, what: &str, force_special: bool) -> Result<TokenSpec> {
    let obj = value
        .as_object()
        .ok_or_else(|| names.err(name, format!("{what}: expected an object with a \"content\" string")))?;
    let content = obj
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| names.err(name, format!("{what}: missing \"content\" string")))?;
    if content.is_empty() {
        return Err(names.err(name, format!("{what}: empty token")));
    }
    let special = force_special || json_bool(obj, "special").unwrap_or(false);
    Ok(TokenSpec {
        content: content.to_string(),
        single_word: json_bool(obj, "single_word").unwrap_or(false),
        lstrip: json_bool(obj, "lstrip").unwrap_or(false),
        rstrip: json_bool(obj, "rstrip").unwrap_or(false),
        normalized: json_bool(obj, "normalized").unwrap_or(!special),
        special,
    })
}

/// A named special token entry (`"pad_token": "!"` or `"bos_token": {"content": ...}`).
pub(super) fn parse_special(value: &Value, names: &Names, name: &str, key: &str) -> Result<Option<SpecialValue>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(SpecialValue::Str(s.clone()))),
        Value::Object(_) => Ok(Some(SpecialValue::Token(parse_token_spec(value, names, name, key, true)?))),
        _ => Err(names.err(name, format!("{key}: expected a string or an AddedToken object"))),
    }
}

pub(super) fn parse_vocab_object(value: &Value, names: &Names, name: &str) -> Result<Vocab> {
    let obj = value.as_object().ok_or_else(|| names.err(name, "the vocabulary is not a JSON object of token -> id"))?;
    if obj.is_empty() {
        return Err(names.err(name, "the vocabulary is empty"));
    }
    let mut vocab = Vocab::default();
    for (token, id) in obj {
        let id = id
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| names.err(name, format!("token {token:?} has id {id}, not a non-negative integer")))?;
        vocab.insert(token.clone(), id);
    }
    Ok(vocab)
}

/// `merges.txt`: an optional `#version` line, then one `left right` pair a line.
pub(super) fn parse_merges_txt(text: &str, names: &Names, name: &str) -> Result<Merges> {
    let mut merges = Merges::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(names.err(
                    name,
                    format!("line {}: expected two tokens separated by one space, found {line:?}", line_no + 1),
                ))
            }
        }
    }
    if merges.is_empty() {
        return Err(names.err(name, "no merges"));
    }
    Ok(merges)
}

/// `tokenizer.json`'s `model.merges`: `"a b"` strings or `["a", "b"]` pairs.
pub(super) fn parse_merges_json(value: &Value, names: &Names, name: &str) -> Result<Merges> {
    let list = value.as_array().ok_or_else(|| names.err(name, "model.merges is not a list"))?;
    let mut merges = Merges::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let pair = match item {
            Value::String(s) => {
                let mut parts = s.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Some((a.to_string(), b.to_string())),
                    _ => None,
                }
            }
            Value::Array(pair) if pair.len() == 2 => match (pair[0].as_str(), pair[1].as_str()) {
                (Some(a), Some(b)) => Some((a.to_string(), b.to_string())),
                _ => None,
            },
            _ => None,
        };
        match pair {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => merges.push((a, b)),
            _ => return Err(names.err(name, format!("model.merges[{i}] is not a pair of tokens: {item}"))),
        }
    }
    if merges.is_empty() {
        return Err(names.err(name, "model.merges is empty"));
    }
    Ok(merges)
}

/// Added tokens with the ids the files declare for them.
pub(super) type FixedTokens = Vec<(u32, TokenSpec)>;

/// Vocabulary, merges and added tokens (with their ids) out of `tokenizer.json`.
pub(super) fn parse_tokenizer_json(text: &str, names: &Names) -> Result<(Vocab, Merges, FixedTokens)> {
    const NAME: &str = "tokenizer.json";
    let root = parse_json_object(text, names, NAME)?;
    let model =
        root.get("model").and_then(Value::as_object).ok_or_else(|| names.err(NAME, "missing \"model\" object"))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            return Err(names.err(NAME, format!("model type is {kind}; a CLIP tokenizer is BPE")));
        }
    }
    let vocab =
        parse_vocab_object(model.get("vocab").ok_or_else(|| names.err(NAME, "missing model.vocab"))?, names, NAME)?;
    let merges =
        parse_merges_json(model.get("merges").ok_or_else(|| names.err(NAME, "missing model.merges"))?, names, NAME)?;
    let mut added = Vec::new();
    match root.get("added_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                let what = format!("added_tokens[{i}]");
                let id = item
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| names.err(NAME, format!("{what}: missing or invalid \"id\"")))?;
                added.push((id, parse_token_spec(item, names, NAME, &what, false)?));
            }
        }
        Some(_) => return Err(names.err(NAME, "added_tokens is not a list")),
    }
    Ok((vocab, merges, added))
}

/// `tokenizer_config.json`'s `added_tokens_decoder` (`{"49406": {"content": ...}}`).
pub(super) fn parse_added_tokens_decoder(value: &Value, names: &Names, name: &str) -> Result<FixedTokens> {
    let obj =
        value.as_object().ok_or_else(|| names.err(name, "added_tokens_decoder is not an object of id -> token"))?;
    let mut out = Vec::with_capacity(obj.len());
    for (id, token) in obj {
        let what = format!("added_tokens_decoder[{id}]");
        let id = id.parse::<u32>().map_err(|_| names.err(name, format!("{what}: the key is not a token id")))?;
        out.push((id, parse_token_spec(token, names, name, &what, false)?));
    }
    Ok(out)
}

/// `model_max_length` of `tokenizer_config.json`.
pub(super) fn parse_context_length(config: Option<&Map<String, Value>>, names: &Names) -> Result<usize> {
    const NAME: &str = "tokenizer_config.json";
    let Some(value) = config.and_then(|c| c.get("model_max_length")) else {
        return Ok(DEFAULT_CONTEXT_LENGTH);
    };
    if value.is_null() {
        return Ok(DEFAULT_CONTEXT_LENGTH);
    }
    if let Some(n) = value.as_u64() {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if (2..=MAX_CONTEXT_LENGTH).contains(&n) {
            return Ok(n);
        }
        if n as f64 >= UNSET_MAX_LENGTH {
            return Ok(DEFAULT_CONTEXT_LENGTH);
        }
    } else if let Some(f) = value.as_f64() {
        if f >= UNSET_MAX_LENGTH {
            return Ok(DEFAULT_CONTEXT_LENGTH);
        }
    }
    Err(names.err(
        NAME,
        format!("model_max_length {value} is not a context length (an integer from 2 to {MAX_CONTEXT_LENGTH})"),
    ))
}

pub(super) fn build_pipeline(vocab: Vocab, merges: Merges, unk: &str, model_file: &str, names: &Names) -> Result<Tokenizer> {
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk.to_string())
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(END_OF_WORD.to_string())
        .fuse_unk(false)
        .build()
        .map_err(|e| names.err(model_file, format!("inconsistent vocabulary and merges: {e}")))?;
    let internal = |e: tokenizers::Error| Error::Tokenizer {
        file: names.file(model_file),
        reason: format!("cannot build the CLIP pipeline: {e}"),
    };
    let mut tokenizer = Tokenizer::new(model);
    let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".to_string()), " ").map_err(internal)?;
    tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![NFC.into(), whitespace.into(), Lowercase.into()])));
    let split = Split::new(SplitPattern::Regex(CLIP_SPLIT_PATTERN.to_string()), SplitDelimiterBehavior::Removed, true)
        .map_err(internal)?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}

