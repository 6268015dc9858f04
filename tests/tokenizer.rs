//! CLIP tokenizer: ids must equal transformers' `CLIPTokenizer` on the same files.
//!
//! Reference ids come from `tests/fixtures/sd{1,2}_ref.safetensors` (see the fixtures README) and,
//! for the extra strings and config variants below, from transformers 5.23.0 / tokenizers 0.23.3
//! in `/root/.cache/ld-venv`, computed with
//! `CLIPTokenizer.from_pretrained(folder)(text, truncation=True, max_length=77).input_ids`
//! (no padding: the tests pad the lists to 77 with the pad id).

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use lifelong_diffusion::error::Error;
use lifelong_diffusion::tokenizer::{ClipTokenizer, TokenizerFiles};

const BOS: i64 = 49406;
const EOS: i64 = 49407;

fn tokenizer_dir(which: &str) -> PathBuf {
    common::fixtures().join(which).join("tokenizer")
}

fn load(which: &str) -> ClipTokenizer {
    ClipTokenizer::from_folder(&tokenizer_dir(which)).unwrap_or_else(|e| panic!("{which}: {e}"))
}

fn read(which: &str, name: &str) -> String {
    let path = tokenizer_dir(which).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// SD-1 `vocab.json` and `merges.txt`, read once.
fn sd1_vocab_merges() -> &'static (String, String) {
    static FILES: OnceLock<(String, String)> = OnceLock::new();
    FILES.get_or_init(|| (read("sd1", "vocab.json"), read("sd1", "merges.txt")))
}

fn sd1_files(config: Option<&str>, special_map: Option<&str>) -> TokenizerFiles {
    let (vocab, merges) = sd1_vocab_merges();
    TokenizerFiles {
        vocab_json: Some(vocab.clone()),
        merges_txt: Some(merges.clone()),
        tokenizer_config_json: config.map(str::to_string),
        special_tokens_map_json: special_map.map(str::to_string),
        ..Default::default()
    }
}

fn padded(ids: &[i64], pad: i64) -> Vec<i64> {
    let mut out = ids.to_vec();
    out.resize(77, pad);
    out
}

fn reference_json(which: &str) -> serde_json::Value {
    let path = common::fixtures().join(format!("{which}_ref.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn check_reference(which: &str, pad: i64) {
    let tok = load(which);
    assert_eq!(tok.context_length(), 77);
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!(tok.pad_id(), pad);
    assert_eq!((tok.bos_id(), tok.eos_id()), (BOS, EOS));
    let json = reference_json(which);
    let refs = common::load_refs(&common::fixtures().join(format!("{which}_ref.safetensors")));
    for (tensor, key) in [
        ("prompt_ids", "prompt"),
        ("negative_ids", "negative_prompt"),
        ("long_ids", "long_prompt"),
        ("empty_ids", "empty_prompt"),
    ] {
        let text = json[key].as_str().unwrap();
        let expected = refs[tensor].ids();
        assert_eq!(refs[tensor].shape, vec![1, 77]);
        let enc = tok.encode(text).unwrap();
        assert_eq!(enc.ids, expected, "{which} {tensor}: {text:?}");
        assert_eq!(enc.ids.len(), 77);
        assert_eq!(enc.ids[enc.len - 1], EOS, "{which} {tensor}: eos ends the unpadded ids");
        assert!(enc.ids[enc.len..].iter().all(|&id| id == pad), "{which} {tensor}: padding");
        let long = key == "long_prompt";
        assert_eq!(enc.truncated, long, "{which} {tensor}: truncation flag");
        if long {
            assert_eq!(enc.len, 77);
            assert_eq!(enc.untruncated_len as u64, json["long_prompt_untruncated_token_count"].as_u64().unwrap());
        } else {
            assert_eq!(enc.untruncated_len, enc.len);
        }
        assert_eq!(tok.tokens(text).unwrap().len(), enc.len, "{which} {tensor}: one token string per id");
    }
}

#[test]
fn sd1_matches_reference_ids() {
    check_reference("sd1", EOS);
}

#[test]
fn sd2_matches_reference_ids() {
    check_reference("sd2", 0);
}

#[test]
fn empty_prompt_is_bos_eos_then_padding() {
    for (which, pad) in [("sd1", EOS), ("sd2", 0)] {
        let tok = load(which);
        for text in ["", "   ", "\n\t "] {
            let enc = tok.encode(text).unwrap();
            assert_eq!(enc.ids, padded(&[BOS, EOS], pad), "{which} {text:?}");
            assert_eq!((enc.len, enc.untruncated_len, enc.truncated), (2, 2, false));
            assert_eq!(tok.tokens(text).unwrap(), ["<|startoftext|>", "<|endoftext|>"]);
        }
    }
}

/// Extra strings; ids by transformers (see the module comment), identical for both fixtures
/// except where SD-2's pad token `!` (an added special token there, id 0) occurs.
/// (text, SD-1 ids, SD-2 ids where they differ)
type Extra = (&'static str, &'static [i64], Option<&'static [i64]>);

const EXTRA: &[Extra] = &[
    (
        "Hello, World!!  It's a   test.",
        &[49406, 3306, 267, 1002, 748, 585, 568, 320, 1628, 269, 49407],
        Some(&[49406, 3306, 267, 1002, 0, 0, 585, 568, 320, 1628, 269, 49407]),
    ),
    (
        "it's they're we've I'm you'll he'd don't IT'S",
        &[49406, 585, 568, 889, 982, 649, 1200, 328, 880, 592, 1342, 797, 1896, 847, 713, 585, 568, 49407],
        None,
    ),
    (
        "café naïve résumé Ünïcödé 東京タワー 🐱🎨 ñandú",
        &[
            49406, 15304, 1097, 35689, 563, 29106, 7054, 4166, 6522, 77, 35689, 66, 7255, 67, 4166, 48338, 21078, 105,
            34941, 2429, 107, 30391, 35710, 13461, 6445, 672, 36019, 49407,
        ],
        None,
    ),
    (
        "cafe\u{301} (decomposed e + combining acute)",
        &[49406, 15304, 263, 561, 19916, 324, 266, 23561, 19734, 264, 49407],
        None,
    ),
    (
        "3.14159 + 42 = 1,000,000 (c) 2024 ½ ²",
        &[
            49406, 274, 269, 272, 275, 272, 276, 280, 266, 275, 273, 284, 272, 267, 271, 271, 271, 267, 271, 271, 271,
            263, 322, 264, 273, 271, 273, 275, 33613, 41175, 49407,
        ],
        None,
    ),
    (
        "tabs\tand\nnew\r\nlines  \u{a0}nbsp\u{3000}ideographic\u{2028}sep \u{85}nel",
        &[49406, 29163, 537, 686, 3418, 6459, 4393, 1909, 78, 4245, 10434, 2693, 49407],
        None,
    ),
    ("<|startoftext|>inline<|endoftext|> tokens", &[49406, 49406, 45004, 49407, 23562, 49407], None),
    (
        "a photo of a cat! wow!!",
        &[49406, 320, 1125, 539, 320, 2368, 256, 2781, 748, 49407],
        Some(&[49406, 320, 1125, 539, 320, 2368, 0, 2781, 0, 0, 49407]),
    ),
    (
        "mixed-case CamelCase snake_case kebab-case, #hashtag @user",
        &[49406, 6780, 268, 2068, 27005, 2068, 8798, 318, 2068, 36497, 268, 2068, 267, 258, 9238, 287, 7031, 49407],
        None,
    ),
    (
        "''quoted'' \"double\" `back` ...ellipsis… — dash",
        &[49406, 8445, 27706, 8445, 257, 3200, 257, 319, 893, 319, 678, 3367, 33041, 959, 2005, 10206, 49407],
        None,
    ),
    ("   leading and trailing spaces   ", &[49406, 3833, 537, 37427, 9006, 49407], None),
    (
        "Ｆｕｌｌｗｉｄｔｈ ﬁne ligature",
        &[
            49406, 171, 121, 228, 171, 121, 243, 171, 121, 234, 171, 121, 234, 171, 121, 245, 171, 121, 231, 171, 121,
            226, 171, 121, 242, 171, 121, 486, 171, 105, 223, 1422, 19915, 4490, 49407,
        ],
        None,
    ),
];

#[test]
fn extra_strings_match_transformers() {
    for (which, pad) in [("sd1", EOS), ("sd2", 0)] {
        let tok = load(which);
        for (text, sd1_ids, sd2_ids) in EXTRA {
            let expected = if which == "sd2" { sd2_ids.unwrap_or(sd1_ids) } else { sd1_ids };
            let enc = tok.encode(text).unwrap();
            assert_eq!(enc.ids, padded(expected, pad), "{which}: {text:?}");
            assert_eq!(enc.len, expected.len(), "{which}: {text:?}");
            assert!(!enc.truncated);
        }
    }
}

#[test]
fn token_strings_for_attention_viewer() {
    let tok = load("sd1");
    assert_eq!(
        tok.tokens("A photo of a CAT").unwrap(),
        ["<|startoftext|>", "a", "photo", "of", "a", "cat", "<|endoftext|>"]
    );
    assert_eq!(
        tok.tokens("café mixed-case, it's").unwrap(),
        ["<|startoftext|>", "café", "mixed", "-", "case", ",", "it", "'s", "<|endoftext|>"]
    );
    // "camelcase" is two pieces, the first without </w>.
    assert_eq!(tok.tokens("CamelCase").unwrap(), ["<|startoftext|>", "camel", "case", "<|endoftext|>"]);
    // Emoji pieces are whole characters here; 京 is split over two byte-level pieces.
    let toks = tok.tokens("🐱 東京").unwrap();
    assert_eq!(toks.len(), tok.encode("🐱 東京").unwrap().len);
    assert_eq!(toks[1], "🐱");
    assert_eq!(toks[2], "東");
    // Truncated like encode.
    let long = "word ".repeat(200);
    let toks = tok.tokens(&long).unwrap();
    assert_eq!(toks.len(), 77);
    assert_eq!(toks[76], "<|endoftext|>");
    assert!(toks[1..76].iter().all(|t| t == "word"));
}

#[test]
fn truncation_keeps_eos_last() {
    let tok = load("sd1");
    // 75 content tokens fit exactly; 76 do not.
    let fits = "a ".repeat(75);
    let enc = tok.encode(&fits).unwrap();
    assert!(!enc.truncated);
    assert_eq!((enc.len, enc.untruncated_len), (77, 77));
    assert_eq!(enc.ids[76], EOS);
    let over = "a ".repeat(76);
    let enc = tok.encode(&over).unwrap();
    assert!(enc.truncated);
    assert_eq!((enc.len, enc.untruncated_len), (77, 78));
    assert_eq!(enc.ids[0], BOS);
    assert_eq!(enc.ids[76], EOS);
    assert!(enc.ids[1..76].iter().all(|&id| id == 320));
}

#[test]
fn add_token_makes_one_new_id() {
    for (which, pad) in [("sd1", EOS), ("sd2", 0)] {
        let mut tok = load(which);
        let before = tok.vocab_size();
        // Before adding, "<cat-toy>" is six pieces.
        assert_eq!(tok.encode("<cat-toy>").unwrap().ids[..8], [BOS, 283, 2368, 268, 5988, 285, EOS, pad]);
        assert_eq!(tok.token_id("<cat-toy>"), None);
        let id = tok.add_token("<cat-toy>").unwrap();
        assert_eq!(id, 49408);
        assert_eq!(tok.vocab_size(), before + 1);
        assert_eq!(tok.token_id("<cat-toy>"), Some(id));
        // transformers after tokenizer.add_tokens("<cat-toy>"):
        let enc = tok.encode("a <cat-toy> on the left").unwrap();
        assert_eq!(enc.ids, padded(&[BOS, 320, id, 525, 518, 1823, EOS], pad), "{which}");
        let bang = if which == "sd2" { 0 } else { 256 };
        assert_eq!(tok.encode("A <CAT-TOY>!").unwrap().ids, padded(&[BOS, 320, id, bang, EOS], pad), "{which}");
        assert_eq!(tok.encode("a<cat-toy>b").unwrap().ids, padded(&[BOS, 320, id, 321, EOS], pad), "{which}");
        assert_eq!(tok.encode("x <cat-toy><cat-toy>").unwrap().ids, padded(&[BOS, 343, id, id, EOS], pad));
        assert_eq!(tok.tokens("a <cat-toy> on").unwrap(), ["<|startoftext|>", "a", "<cat-toy>", "on", "<|endoftext|>"]);
        // Adding again is a no-op; a second token gets the next id.
        assert_eq!(tok.add_token("<cat-toy>").unwrap(), id);
        assert_eq!(tok.vocab_size(), before + 1);
        let id2 = tok.add_token("<dog-toy>").unwrap();
        assert_eq!(id2, id + 1);
        assert_eq!(tok.vocab_size(), before + 2);
        assert_eq!(tok.encode("<dog-toy> and <cat-toy>").unwrap().ids[..5], [BOS, id2, 537, id, EOS]);
        // Existing tokens keep their ids.
        assert_eq!(tok.add_token("<|endoftext|>").unwrap(), EOS);
        assert_eq!(tok.vocab_size(), before + 2);
    }
}

#[test]
fn add_token_rejects_blank() {
    let mut tok = load("sd1");
    for bad in ["", " ", "\t\n"] {
        assert!(matches!(tok.add_token(bad), Err(Error::InvalidInput(_))), "{bad:?}");
    }
    assert_eq!(tok.vocab_size(), 49408);
}

#[test]
fn add_token_on_a_word_piece_reuses_its_id_like_transformers() {
    // transformers: tokenizer.add_tokens("hello") -> 1, id 12887 ("hello" piece), len stays 49409
    // after "<cat-toy>"; "hello there" -> [49406, 12887, 997, 49407].
    let mut tok = load("sd1");
    assert_eq!(tok.add_token("hello").unwrap(), 12887);
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!(tok.encode("hello there").unwrap().ids[..4], [BOS, 12887, 997, EOS]);
}

/// Special-token flag variants of tokenizer_config.json / special_tokens_map.json on the SD-1
/// vocabulary: which spelling variants of the special tokens are recognised, and the pad id,
/// as transformers decides them (ids for "<|ENDOFTEXT|> a", "<|STARTOFTEXT|> a", "hi! !").
#[test]
fn special_token_flags_follow_transformers() {
    fn tok(content: &str, normalized: bool) -> String {
        format!(
            r#"{{"content":"{content}","lstrip":false,"normalized":{normalized},"rstrip":false,"single_word":false}}"#
        )
    }
    const S: &str = "<|startoftext|>";
    const E: &str = "<|endoftext|>";
    let end_upper_matched: &[i64] = &[BOS, EOS, 320, EOS];
    let end_upper_pieces: &[i64] = &[BOS, 27, 347, 40786, 4160, 91, 285, 320, EOS];
    let start_upper_matched: &[i64] = &[BOS, BOS, 320, EOS];
    let start_upper_pieces: &[i64] = &[BOS, 27, 347, 993, 6659, 4160, 91, 285, 320, EOS];
    let bang_bpe: &[i64] = &[BOS, 1883, 256, 256, EOS];
    let bang_pad: &[i64] = &[BOS, 1883, 0, 0, EOS];
    // (name, tokenizer_config.json, special_tokens_map.json, pad id, expected ids of the 3 texts)
    type Case<'a> = (&'a str, Option<String>, Option<String>, i64, [&'a [i64]; 3]);
    let cases: Vec<Case> = vec![
        (
            "all dict normalized=true",
            None,
            Some(format!(
                r#"{{"bos_token":{},"eos_token":{},"pad_token":{},"unk_token":{}}}"#,
                tok(S, true),
                tok(E, true),
                tok(E, true),
                tok(E, true)
            )),
            EOS,
            [end_upper_matched, start_upper_matched, bang_bpe],
        ),
        (
            "all strings",
            None,
            Some(format!(r#"{{"bos_token":"{S}","eos_token":"{E}","pad_token":"{E}","unk_token":"{E}"}}"#)),
            EOS,
            [end_upper_pieces, start_upper_pieces, bang_bpe],
        ),
        (
            "eos false, pad/unk true",
            None,
            Some(format!(
                r#"{{"bos_token":{},"eos_token":{},"pad_token":{},"unk_token":{}}}"#,
                tok(S, false),
                tok(E, false),
                tok(E, true),
                tok(E, true)
            )),
            EOS,
            [end_upper_matched, start_upper_pieces, bang_bpe],
        ),
        (
            "eos true, unk false, pad true (pad equals eos, so unk's flags win)",
            None,
            Some(format!(
                r#"{{"bos_token":{},"eos_token":{},"unk_token":{},"pad_token":{}}}"#,
                tok(S, true),
                tok(E, true),
                tok(E, false),
                tok(E, true)
            )),
            EOS,
            [end_upper_pieces, start_upper_matched, bang_bpe],
        ),
        (
            "SD-2 hub layout: config pad <|endoftext|>, special_tokens_map pad !",
            Some(format!(
                r#"{{"model_max_length":77,"pad_token":"{E}","bos_token":{},"eos_token":{},"unk_token":{}}}"#,
                tok(S, true),
                tok(E, true),
                tok(E, true)
            )),
            Some(format!(
                r#"{{"bos_token":{},"eos_token":{},"pad_token":"!","unk_token":{}}}"#,
                tok(S, true),
                tok(E, true),
                tok(E, true)
            )),
            0,
            [end_upper_matched, start_upper_matched, bang_pad],
        ),
        ("no config files", None, None, EOS, [end_upper_pieces, start_upper_pieces, bang_bpe]),
        (
            "added_tokens_decoder in the config (special_tokens_map.json ignored)",
            Some(
                r#"{"model_max_length":77,"pad_token":"<|endoftext|>","added_tokens_decoder":{
                "49406":{"content":"<|startoftext|>","lstrip":false,"normalized":true,"rstrip":false,"single_word":false,"special":true},
                "49407":{"content":"<|endoftext|>","lstrip":false,"normalized":false,"rstrip":false,"single_word":false,"special":true},
                "49408":{"content":"<cat-toy>","lstrip":false,"normalized":true,"rstrip":false,"single_word":false,"special":false}}}"#
                    .to_string(),
            ),
            Some(r#"{"pad_token":"!"}"#.to_string()),
            EOS,
            [end_upper_pieces, start_upper_matched, bang_bpe],
        ),
    ];
    for (name, config, special_map, pad, expected) in cases {
        let files = sd1_files(config.as_deref(), special_map.as_deref());
        let tok = ClipTokenizer::from_files(&files, "variant").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tok.pad_id(), pad, "{name}");
        for (text, ids) in ["<|ENDOFTEXT|> a", "<|STARTOFTEXT|> a", "hi! !"].into_iter().zip(expected) {
            assert_eq!(tok.encode(text).unwrap().ids, padded(ids, pad), "{name}: {text:?}");
        }
        if name.starts_with("added_tokens_decoder") {
            assert_eq!(tok.vocab_size(), 49409);
            assert_eq!(tok.encode("A <CAT-TOY> x").unwrap().ids[..5], [BOS, 320, 49408, 343, EOS]);
        } else {
            assert_eq!(tok.vocab_size(), 49408, "{name}");
        }
    }
}

#[test]
fn tokenizer_json_and_vocab_merges_agree() {
    // The SD-2 tokenizer.json carries the same vocabulary and merges; with the SD-1 configs the
    // two sources must tokenize identically.
    let json_files = TokenizerFiles {
        tokenizer_json: Some(read("sd2", "tokenizer.json")),
        tokenizer_config_json: Some(read("sd1", "tokenizer_config.json")),
        ..Default::default()
    };
    let from_json = ClipTokenizer::from_files(&json_files, "sd2-json").unwrap();
    let from_vocab = load("sd1");
    for (text, _, _) in EXTRA {
        let a = from_json.encode(text).unwrap();
        let b = from_vocab.encode(text).unwrap();
        // "!" is an added special token in that tokenizer.json, so skip strings with it.
        if !text.contains('!') {
            assert_eq!(a, b, "{text:?}");
        }
    }
}

#[test]
fn context_length_from_config() {
    let short = sd1_files(Some(r#"{"model_max_length":8,"pad_token":"<|endoftext|>"}"#), None);
    let tok = ClipTokenizer::from_files(&short, "short").unwrap();
    assert_eq!(tok.context_length(), 8);
    let enc = tok.encode("a photo of a cat on a red mat").unwrap();
    assert_eq!(enc.ids, [BOS, 320, 1125, 539, 320, 2368, 525, EOS]);
    assert!(enc.truncated);
    assert_eq!((enc.len, enc.untruncated_len), (8, 11));
    assert_eq!(tok.tokens("a photo of a cat on a red mat").unwrap().len(), 8);

    // transformers' "unset" marker int(1e30) falls back to 77.
    let unset = sd1_files(Some(r#"{"model_max_length":1000000000000000019884624838656}"#), None);
    assert_eq!(ClipTokenizer::from_files(&unset, "unset").unwrap().context_length(), 77);

    for bad in [r#"{"model_max_length":1}"#, r#"{"model_max_length":-5}"#, r#"{"model_max_length":"77"}"#] {
        let err = ClipTokenizer::from_files(&sd1_files(Some(bad), None), "bad").unwrap_err();
        match err {
            Error::Tokenizer { file, reason } => {
                assert_eq!(file, "bad/tokenizer_config.json");
                assert!(reason.contains("model_max_length"), "{reason}");
            }
            other => panic!("{bad}: {other}"),
        }
    }
}

fn tokenizer_error(files: &TokenizerFiles) -> (String, String) {
    match ClipTokenizer::from_files(files, "models/sd/tokenizer") {
        Err(Error::Tokenizer { file, reason }) => (file, reason),
        Err(other) => panic!("expected a tokenizer error, got {other}"),
        Ok(_) => panic!("expected a tokenizer error, got a tokenizer"),
    }
}

#[test]
fn malformed_files_name_the_file() {
    let (vocab, merges) = sd1_vocab_merges();
    let with = |vocab_json: &str, merges_txt: &str| TokenizerFiles {
        vocab_json: Some(vocab_json.to_string()),
        merges_txt: Some(merges_txt.to_string()),
        ..Default::default()
    };

    let (file, reason) = tokenizer_error(&with("{not json", merges));
    assert_eq!(file, "models/sd/tokenizer/vocab.json");
    assert!(reason.contains("JSON"), "{reason}");

    let (file, _) = tokenizer_error(&with("[1, 2, 3]", merges));
    assert_eq!(file, "models/sd/tokenizer/vocab.json");

    let (file, reason) = tokenizer_error(&with(r#"{"a": -1}"#, merges));
    assert_eq!(file, "models/sd/tokenizer/vocab.json");
    assert!(reason.contains("\"a\""), "{reason}");

    let (file, _) = tokenizer_error(&with("{}", merges));
    assert_eq!(file, "models/sd/tokenizer/vocab.json");

    // A merges line that is not a pair.
    let bad_merges = format!("{}\nthree parts here\n", merges.lines().take(10).collect::<Vec<_>>().join("\n"));
    let (file, reason) = tokenizer_error(&with(vocab, &bad_merges));
    assert_eq!(file, "models/sd/tokenizer/merges.txt");
    assert!(reason.contains("line 11"), "{reason}");

    // Merges that use tokens the vocabulary lacks.
    let (file, reason) = tokenizer_error(&with(vocab, "#version: 0.2\nqq zz\n"));
    assert_eq!(file, "models/sd/tokenizer/merges.txt");
    assert!(reason.contains("zz") || reason.contains("qq"), "{reason}");

    let (file, _) = tokenizer_error(&with(vocab, "#version: 0.2\n"));
    assert_eq!(file, "models/sd/tokenizer/merges.txt");

    // tokenizer.json: not JSON, wrong model, no merges, bad added token.
    let json = |text: &str| TokenizerFiles { tokenizer_json: Some(text.to_string()), ..Default::default() };
    for bad in [
        "not json at all",
        r#"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#,
        r#"{"model": {"type": "BPE", "vocab": {"a": 0}}}"#,
        r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [1, 2]}}"#,
        r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}"#,
        r#"{"added_tokens": 5, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}"#,
        r#"[]"#,
    ] {
        let (file, reason) = tokenizer_error(&json(bad));
        assert_eq!(file, "models/sd/tokenizer/tokenizer.json", "{bad}: {reason}");
    }

    // Config files that are not JSON objects.
    let mut files = with(vocab, merges);
    files.tokenizer_config_json = Some("{".into());
    assert_eq!(tokenizer_error(&files).0, "models/sd/tokenizer/tokenizer_config.json");
    let mut files = with(vocab, merges);
    files.special_tokens_map_json = Some("[]".into());
    assert_eq!(tokenizer_error(&files).0, "models/sd/tokenizer/special_tokens_map.json");
    // A pad token the vocabulary does not have.
    let mut files = with(vocab, merges);
    files.special_tokens_map_json = Some(r#"{"pad_token": "<pad>"}"#.into());
    let (file, reason) = tokenizer_error(&files);
    assert_eq!(file, "models/sd/tokenizer/special_tokens_map.json");
    assert!(reason.contains("<pad>"), "{reason}");
    // An added token whose declared id does not follow the vocabulary.
    let mut files = with(vocab, merges);
    files.tokenizer_config_json =
        Some(r#"{"added_tokens_decoder": {"50000": {"content": "<x>", "special": false}}}"#.into());
    let (file, reason) = tokenizer_error(&files);
    assert_eq!(file, "models/sd/tokenizer/tokenizer_config.json");
    assert!(reason.contains("<x>"), "{reason}");
}

#[test]
fn missing_files_say_what_is_needed() {
    let (file, reason) = tokenizer_error(&TokenizerFiles::default());
    assert_eq!(file, "models/sd/tokenizer");
    for needed in ["tokenizer.json", "vocab.json", "merges.txt"] {
        assert!(reason.contains(needed), "{reason}");
    }
    let (vocab, _) = sd1_vocab_merges();
    let only_vocab = TokenizerFiles {
        vocab_json: Some(vocab.clone()),
        tokenizer_config_json: Some("{}".into()),
        ..Default::default()
    };
    let (_, reason) = tokenizer_error(&only_vocab);
    assert!(reason.contains("found: vocab.json, tokenizer_config.json"), "{reason}");

    // from_folder: a folder without the files, and no folder at all.
    let empty = std::env::temp_dir().join(format!("ld-tokenizer-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    match ClipTokenizer::from_folder(&empty) {
        Err(Error::Tokenizer { file, reason }) => {
            assert_eq!(file, empty.display().to_string());
            assert!(reason.contains("found: none"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&empty).ok();
    let missing = common::fixtures().join("no-such-folder");
    assert!(matches!(ClipTokenizer::from_folder(&missing), Err(Error::Read { .. })));
}

#[test]
fn odd_input_does_not_panic() {
    let tok = load("sd2");
    let long = "ünïcödé, ".repeat(5000);
    for text in ["\0", "\u{301}", "\u{feff}\u{200b}", "<|endoftext|>".repeat(100).as_str(), long.as_str(), "\u{10ffff}"]
    {
        let enc = tok.encode(text).unwrap();
        assert_eq!(enc.ids.len(), 77);
        assert_eq!(enc.ids[0], BOS);
        assert_eq!(enc.ids[enc.len - 1], EOS);
        assert_eq!(tok.tokens(text).unwrap().len(), enc.len);
    }
}
