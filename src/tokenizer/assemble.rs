//! Assembling a tokenizer from its parsed files: which files give the vocabulary, which named
//! special tokens hold, and the added tokens registered as transformers registers them.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tokenizers::models::bpe::{Merges, Vocab};
use tokenizers::{AddedToken, Tokenizer};

use super::files::*;
use super::{TokenizerFiles, SPECIAL_KEYS};
use crate::error::{Error, Result};

/// Vocabulary, merges and the added tokens with fixed ids, from `tokenizer.json` or from
/// `vocab.json` + `merges.txt`; the last value names the file they came from.
pub(super) fn model_files(files: &TokenizerFiles, names: &Names, folder_name: &str) -> Result<(Vocab, Merges, FixedTokens, &'static str)> {
    match (&files.tokenizer_json, &files.vocab_json, &files.merges_txt) {
        (Some(json), _, _) => {
            let (vocab, merges, added) = parse_tokenizer_json(json, names)?;
            Ok((vocab, merges, added, "tokenizer.json"))
        }
        (None, Some(vocab_json), Some(merges_txt)) => {
            let root: Value = serde_json::from_str(vocab_json)
                .map_err(|e| names.err("vocab.json", format!("invalid JSON: {e}")))?;
            let vocab = parse_vocab_object(&root, names, "vocab.json")?;
            let merges = parse_merges_txt(merges_txt, names, "merges.txt")?;
            Ok((vocab, merges, Vec::new(), "merges.txt"))
        }
        (None, vocab_json, merges_txt) => {
            let mut found: Vec<&str> = Vec::new();
            for (present, name) in [
                (vocab_json.is_some(), "vocab.json"),
                (merges_txt.is_some(), "merges.txt"),
                (files.tokenizer_config_json.is_some(), "tokenizer_config.json"),
                (files.special_tokens_map_json.is_some(), "special_tokens_map.json"),
            ] {
                if present {
                    found.push(name);
                }
            }
            let found = if found.is_empty() { "none".to_string() } else { found.join(", ") };
            Err(Error::Tokenizer {
                file: if folder_name.is_empty() { "tokenizer".to_string() } else { folder_name.to_string() },
                reason: format!(
                    "missing tokenizer files: a CLIP tokenizer needs tokenizer.json, or vocab.json together \
                 with merges.txt (found: {found})"
                ),
            })
        }
    }
}

/// The named special tokens (bos, eos, unk, pad, ...) with where each came from:
/// special_tokens_map.json overrides tokenizer_config.json, unless the config carries
/// added_tokens_decoder (then special_tokens_map.json is not read); CLIPTokenizer's defaults last.
pub(super) fn named_specials(
    config: Option<&Map<String, Value>>,
    special_map: Option<&Map<String, Value>>,
    fixed: &FixedTokens,
    decoder_in_config: bool,
    names: &Names,
) -> Result<Vec<(&'static str, SpecialValue, &'static str)>> {
    let mut specials: Vec<(&'static str, SpecialValue, &'static str)> = Vec::new();
    for key in SPECIAL_KEYS {
        let mut found = None;
        if !decoder_in_config {
            if let Some(v) = special_map.and_then(|m| m.get(key)) {
                found = parse_special(v, names, "special_tokens_map.json", key)?
                    .map(|s| (s, "special_tokens_map.json"));
            }
        }
        if found.is_none() {
            if let Some(v) = config.and_then(|c| c.get(key)) {
                found =
                    parse_special(v, names, "tokenizer_config.json", key)?.map(|s| (s, "tokenizer_config.json"));
            }
        }
        // CLIPTokenizer's defaults.
        let found = found.or(match key {
            "bos_token" => Some((SpecialValue::Str("<|startoftext|>".into()), "CLIPTokenizer defaults")),
            "eos_token" | "unk_token" | "pad_token" => {
                Some((SpecialValue::Str("<|endoftext|>".into()), "CLIPTokenizer defaults"))
            }
            _ => None,
        });
        if let Some((mut value, source)) = found {
            // A special token that the added tokens describe takes their flags.
            if let Some((_, spec)) = fixed.iter().find(|(_, t)| t.content == value.content()) {
                value = SpecialValue::Token(spec.clone());
            }
            specials.push((key, value, source));
        }
    }
    Ok(specials)
}

/// Registers the added tokens the way transformers does: the fixed ones by id, then the named
/// specials that are not among them, each distinct version once; when one content comes in
/// several versions the last one's flags hold. A fixed token must land on its declared id.
pub(super) fn register_added(tokenizer: &mut Tokenizer, fixed: &FixedTokens, specials: &[(&str, SpecialValue, &str)], decoder_in_config: bool, names: &Names) -> Result<()> {
    let fixed_contents: HashSet<&str> = fixed.iter().map(|(_, t)| t.content.as_str()).collect();
    let mut versions: Vec<SpecialValue> = fixed.iter().map(|(_, t)| SpecialValue::Token(t.clone())).collect();
    for (_, value, _) in specials {
        if !fixed_contents.contains(value.content()) && !versions.contains(value) {
            versions.push(value.clone());
        }
    }
    let mut to_add: Vec<TokenSpec> = Vec::new();
    for version in &versions {
        let spec = match version {
            SpecialValue::Token(t) if fixed_contents.contains(t.content.as_str()) => t.clone(),
            other => other.to_spec(),
        };
        match to_add.iter_mut().find(|t| t.content == spec.content) {
            Some(existing) => *existing = spec,
            None => to_add.push(spec),
        }
    }
    let added: Vec<AddedToken> = to_add.iter().map(TokenSpec::to_added).collect();
    tokenizer.add_tokens(&added);
    for (id, spec) in fixed {
        let got = tokenizer.token_to_id(&spec.content);
        if got != Some(*id) {
            let file = if decoder_in_config { "tokenizer_config.json" } else { "tokenizer.json" };
            return Err(names.err(
                file,
                format!(
                    "added token {:?} is declared with id {id} but gets id {} (ids of added tokens must \
                     follow the vocabulary without gaps)",
                    spec.content,
                    got.map_or("none".to_string(), |g| g.to_string())
                ),
            ));
        }
    }
    Ok(())
}
