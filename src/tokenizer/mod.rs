//! CLIP byte-level BPE tokenizer, equal to transformers' `CLIPTokenizer` on the same files.
//!
//! I/O-free: [`ClipTokenizer::from_files`] takes the files' contents; [`ClipTokenizer::from_folder`]
//! (native only) reads whichever of them a folder holds.
//!
//! The pipeline is the one transformers 5 builds for `CLIPTokenizer`, whatever the files'
//! own pipeline description says (transformers also rebuilds it, taking only the vocabulary,
//! merges and added tokens from `tokenizer.json`):
//!
//! * normalizer: NFC, runs of whitespace (`\s+`) to one space, lowercase;
//! * pre-tokenizer: CLIP's split regex (keeping the matches), then byte-level (GPT-2 byte to
//!   unicode table, no prefix space);
//! * model: BPE with the end-of-word suffix `</w>`, unknown token `<|endoftext|>`;
//! * `<|startoftext|>` before and `<|endoftext|>` after, truncation to the context length
//!   (the last id is always the end token) and padding with the pad token.
//!
//! Added and special tokens (`tokenizer.json`'s `added_tokens`, `tokenizer_config.json`'s
//! `added_tokens_decoder`, the bos/eos/unk/pad entries of `tokenizer_config.json` and
//! `special_tokens_map.json`) are registered with the same flags transformers ends up with,
//! which decides for instance that SD-2's pad token `!` is matched as a token of its own
//! (id 0) wherever it occurs in a prompt, and whether `<|ENDOFTEXT|>` in upper case is
//! recognised as the special token.

use std::collections::HashSet;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Decoder, Model, Tokenizer};

use crate::error::{Error, Result};

mod assemble;
mod files;
use assemble::{model_files, named_specials, register_added};
use files::*;

/// Context length used when `tokenizer_config.json` gives no `model_max_length`.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;

/// CLIP's pre-tokenization regex (what transformers and OpenAI CLIP use).
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// BPE end-of-word suffix of CLIP's vocabulary.
const END_OF_WORD: &str = "</w>";

/// Named special tokens in the order transformers registers them.
const SPECIAL_KEYS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// `model_max_length` values at or above this are transformers' "unset" marker (int(1e30)).
const UNSET_MAX_LENGTH: f64 = 1e18;

/// Largest context length accepted from a config.
const MAX_CONTEXT_LENGTH: usize = 1 << 16;

/// The contents of a tokenizer folder's files; `None` for a file that is absent.
///
/// Either `tokenizer_json`, or `vocab_json` together with `merges_txt`, is needed;
/// `tokenizer_config_json` (context length, pad token) and `special_tokens_map_json` are optional.
#[derive(Debug, Clone, Default)]
pub struct TokenizerFiles {
    pub tokenizer_json: Option<String>,
    pub vocab_json: Option<String>,
    pub merges_txt: Option<String>,
    pub tokenizer_config_json: Option<String>,
    pub special_tokens_map_json: Option<String>,
}

/// The ids of one prompt, ready for the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly `context_length` ids: bos, the prompt's tokens, eos, then pad ids.
    pub ids: Vec<i64>,
    /// Whether tokens of the prompt were dropped to fit the context length.
    pub truncated: bool,
    /// Number of ids before the padding, bos and eos included (at most `context_length`).
    pub len: usize,
    /// Number of ids the prompt would need without truncation, bos and eos included
    /// (equal to `len` unless `truncated`).
    pub untruncated_len: usize,
}

/// CLIP tokenizer (SD-1 and SD-2 text encoders).
#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    bos_token: String,
    eos_token: String,
    context_length: usize,
    vocab_size: usize,
    /// Ids of added tokens (specials and run-time additions): their token strings are the
    /// text itself, not byte-level pieces.
    added_ids: HashSet<u32>,
    /// The tokenizer folder, for error messages.
    folder: String,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("context_length", &self.context_length)
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl ClipTokenizer {
    /// Builds the tokenizer from the contents of a tokenizer folder's files.
    /// `folder_name` only serves the error messages (`"{folder_name}/vocab.json: ..."`).
    ///
    /// `tokenizer.json` is used when present, else `vocab.json` + `merges.txt`.
    pub fn from_files(files: &TokenizerFiles, folder_name: &str) -> Result<Self> {
        let names = Names { folder: folder_name };
        let config = files
            .tokenizer_config_json
            .as_deref()
            .map(|t| parse_json_object(t, &names, "tokenizer_config.json"))
            .transpose()?;
        let special_map = files
            .special_tokens_map_json
            .as_deref()
            .map(|t| parse_json_object(t, &names, "special_tokens_map.json"))
            .transpose()?;

        let (vocab, merges, file_added, model_file) = model_files(files, &names, folder_name)?;

        // Added tokens with ids: tokenizer_config.json's added_tokens_decoder wins over
        // tokenizer.json's added_tokens (as in transformers).
        let decoder_in_config = config.as_ref().and_then(|c| c.get("added_tokens_decoder")).filter(|v| !v.is_null());
        let mut fixed: FixedTokens = match decoder_in_config {
            Some(v) => parse_added_tokens_decoder(v, &names, "tokenizer_config.json")?,
            None => file_added,
        };
        fixed.sort_by_key(|(id, _)| *id);

        let specials = named_specials(config.as_ref(), special_map.as_ref(), &fixed, decoder_in_config.is_some(), &names)?;
        let special = |key: &str| specials.iter().find(|(k, _, _)| *k == key);
        let unk = special("unk_token").map(|(_, v, _)| v.content().to_string()).unwrap_or_default();

        let mut tokenizer = build_pipeline(vocab, merges, &unk, model_file, &names)?;

        register_added(&mut tokenizer, &fixed, &specials, decoder_in_config.is_some(), &names)?;

        let id_of = |key: &str| -> Result<(String, u32)> {
            let (_, value, source) =
                special(key).ok_or_else(|| names.err("tokenizer_config.json", format!("no {key}")))?;
            let content = value.content().to_string();
            // A named token must be a vocabulary entry or a declared added token: a new id past the
            // vocabulary would index past the text encoder's embedding table.
            let known = tokenizer.get_model().token_to_id(&content).is_some()
                || fixed.iter().any(|(_, t)| t.content == content);
            let id = tokenizer.token_to_id(&content).filter(|_| known).ok_or_else(|| {
                let file = if source.ends_with(".json") { source } else { model_file };
                names.err(file, format!("{key} {content:?} ({source}) is not in the vocabulary ({model_file})"))
            })?;
            Ok((content, id))
        };
        let (bos_token, bos_id) = id_of("bos_token")?;
        let (eos_token, eos_id) = id_of("eos_token")?;
        let (_, pad_id) = id_of("pad_token")?;
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((eos_token.clone(), eos_id), (bos_token.clone(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));

        let context_length = parse_context_length(config.as_ref(), &names)?;
        let added_ids = tokenizer.get_added_vocabulary().get_added_tokens_decoder().keys().copied().collect();
        let vocab_size = tokenizer.get_vocab_size(true);
        Ok(ClipTokenizer {
            tokenizer,
            bos_id,
            eos_id,
            pad_id,
            bos_token,
            eos_token,
            context_length,
            vocab_size,
            added_ids,
            folder: if folder_name.is_empty() { "tokenizer".to_string() } else { folder_name.to_string() },
        })
    }

    /// Reads a tokenizer folder (`tokenizer.json`, or `vocab.json` + `merges.txt`, plus the
    /// optional `tokenizer_config.json` and `special_tokens_map.json`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_folder(dir: &std::path::Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer folder not found"),
            });
        }
        let read = |name: &str| -> Result<Option<String>> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|e| Error::Tokenizer {
                    file: path.display().to_string(),
                    reason: format!("not UTF-8 text: {e}"),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Read { path, source }),
            }
        };
        let files = TokenizerFiles {
            tokenizer_json: read("tokenizer.json")?,
            vocab_json: read("vocab.json")?,
            merges_txt: read("merges.txt")?,
            tokenizer_config_json: read("tokenizer_config.json")?,
            special_tokens_map_json: read("special_tokens_map.json")?,
        };
        Self::from_files(&files, &dir.display().to_string())
    }

    /// The prompt's ids, bos and eos excluded, before truncation.
    fn content(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.tokenizer.encode(text, false).map_err(|e| Error::Tokenizer {
            file: self.folder.clone(),
            reason: format!("cannot tokenize the prompt: {e}"),
        })
    }

    /// Ids padded/truncated to [`context_length`](Self::context_length), as
    /// `tokenizer(text, padding="max_length", max_length=context_length, truncation=True)`:
    /// bos, at most `context_length - 2` prompt tokens, eos, pad ids.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let content = self.content(text)?;
        let content = content.get_ids();
        let room = self.context_length - 2;
        let kept = content.len().min(room);
        let mut ids = Vec::with_capacity(self.context_length);
        ids.push(i64::from(self.bos_id));
        ids.extend(content[..kept].iter().map(|&id| i64::from(id)));
        ids.push(i64::from(self.eos_id));
        let len = ids.len();
        ids.resize(self.context_length, i64::from(self.pad_id));
        Ok(Encoded { ids, truncated: content.len() > room, len, untruncated_len: content.len() + 2 })
    }

    /// Number of ids the text encoder takes (`model_max_length`, 77 for SD).
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Vocabulary size, added tokens included (`len(tokenizer)` in transformers).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Id of the start token (`<|startoftext|>`).
    pub fn bos_id(&self) -> i64 {
        i64::from(self.bos_id)
    }

    /// Id of the end token (`<|endoftext|>`).
    pub fn eos_id(&self) -> i64 {
        i64::from(self.eos_id)
    }

    /// Id the encoder pads with (49407 for SD-1, 0 = `!` for SD-2).
    pub fn pad_id(&self) -> i64 {
        i64::from(self.pad_id)
    }

    /// Adds a token at run time (textual inversion / concept learning), like transformers'
    /// `tokenizer.add_tokens(token)`: matched wherever it occurs in a prompt (after
    /// lowercasing), encoded as one id. Returns its id: the existing one if the token is already
    /// known, a new one (the old [`vocab_size`](Self::vocab_size)) otherwise. Note that a string
    /// that is already a vocabulary entry (e.g. `"hello"`, a word piece) keeps that entry's id,
    /// so a caller that needs a fresh embedding row should check `id >= old vocab_size`.
    pub fn add_token(&mut self, token: &str) -> Result<i64> {
        if token.is_empty() || token.trim().is_empty() {
            return Err(Error::InvalidInput(format!("cannot add the token {token:?}: it is empty or blank")));
        }
        if let Some(&id) = self.tokenizer.get_added_vocabulary().get_vocab().get(token) {
            return Ok(i64::from(id));
        }
        self.tokenizer.add_tokens(&[AddedToken::from(token.to_string(), false)]);
        let id = self
            .tokenizer
            .token_to_id(token)
            .ok_or_else(|| Error::InvalidInput(format!("cannot add the token {token:?}")))?;
        self.added_ids.insert(id);
        self.vocab_size = self.tokenizer.get_vocab_size(true);
        Ok(i64::from(id))
    }

    /// Id of a token string as the vocabulary spells it (`"cat</w>"`, `"<|endoftext|>"`,
    /// an added token such as `"<cat-toy>"`).
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.tokenizer.token_to_id(token).map(i64::from)
    }

    /// The vocabulary's whole words (entries that end a word, `"cat</w>"`, whose text is ASCII
    /// letters, at least three), as text and id, in id order; added tokens are not among them.
    pub fn whole_words(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .tokenizer
            .get_vocab(false)
            .into_iter()
            .filter(|(_, id)| !self.added_ids.contains(id))
            .filter_map(|(token, id)| {
                let word = token.strip_suffix(END_OF_WORD)?;
                (word.len() >= 3 && word.bytes().all(|b| b.is_ascii_alphabetic())).then(|| (word.to_string(), i64::from(id)))
            })
            .collect();
        out.sort_by_key(|w| w.1);
        out
    }

    /// The token strings of a prompt, one for each of the first [`Encoded::len`] ids of
    /// [`encode`](Self::encode) (bos and eos included, padding excluded, same truncation):
    /// word pieces as text, `</w>` stripped (`"a photo"` -> `["<|startoftext|>", "a", "photo",
    /// "<|endoftext|>"]`). A piece that holds only part of a multi-byte character shows
    /// U+FFFD for it.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let content = self.content(text)?;
        let room = self.context_length - 2;
        let decoder = ByteLevelDecoder::default();
        let mut out = Vec::with_capacity(content.len().min(room) + 2);
        out.push(self.bos_token.clone());
        for (&id, token) in content.get_ids().iter().zip(content.get_tokens()).take(room) {
            if self.added_ids.contains(&id) {
                out.push(token.clone());
                continue;
            }
            let piece = token.strip_suffix(END_OF_WORD).unwrap_or(token).to_string();
            let text =
                decoder.decode_chain(vec![piece.clone()]).ok().and_then(|v| v.into_iter().next()).unwrap_or(piece);
            out.push(text);
        }
        out.push(self.eos_token.clone());
        Ok(out)
    }

    /// The underlying `tokenizers` tokenizer (no truncation or padding configured; `encode`
    /// with `add_special_tokens = true` adds bos/eos).
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
