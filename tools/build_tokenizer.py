"""Builds the built-in model's CLIP byte-level BPE tokenizer from the world's vocabulary.

The vocabulary is CLIP's layout: the 256 byte symbols, the same 256 with "</w>", one entry per merge
(learned here by plain BPE on the world's words until every word is a single token), then
<|startoftext|> and <|endoftext|>. Unknown words fall back to byte pieces, as in CLIP.
Writes vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json (SD-1.5's files).

    python tools/build_tokenizer.py --meta DIR/meta.json --out OUT_DIR
"""
import argparse
import json
from collections import Counter
from pathlib import Path

from common import CONTEXT

# Words every caption-like prompt may use even if the world's captions do not.
EXTRA_WORDS = ["a", "an", "the", "and", "of", "on", "in", "at", "to", "with", "two", "three", "one",
               "photo", "picture", "image", "drawing", "shape", "shapes", "object", "objects", "next"]


def bytes_to_unicode():
    """CLIP/GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(words):
    """Plain BPE over the word list (each word once) until every word is one symbol.
    Ties break on the pair's text so the result is deterministic."""
    b2u = bytes_to_unicode()
    segs = {w: [b2u[b] for b in w.encode()] for w in words}
    for w in segs:
        segs[w][-1] += "</w>"
    merges = []
    while True:
        counts = Counter()
        for s in segs.values():
            for a, b in zip(s, s[1:]):
                counts[(a, b)] += 1
        if not counts:
            return merges
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        for w, s in segs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == pair:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segs[w] = out


def build(words, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    words = sorted(set(w.lower() for w in words))
    b2u = bytes_to_unicode()
    symbols = list(b2u.values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges = learn_merges(words)
    vocab_list += [a + b for a, b in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab_list)) == len(vocab_list), "duplicate vocabulary entries"
    vocab = {t: i for i, t in enumerate(vocab_list)}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = lambda s: {"content": s, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    (out / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": special("<|startoftext|>"), "eos_token": special("<|endoftext|>"),
        "pad_token": "<|endoftext|>", "unk_token": special("<|endoftext|>")}, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": special("<|startoftext|>"), "do_lower_case": True,
        "eos_token": special("<|endoftext|>"), "errors": "replace", "model_max_length": CONTEXT,
        "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer",
        "unk_token": special("<|endoftext|>")}, indent=2))
    check(out, words)
    return len(vocab)


def check(folder, words):
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(str(folder))
    for w in words:
        ids = tok(w, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"world word {w!r} is not one token: {tok.convert_ids_to_tokens(ids)}"
    ids = tok("a zebra", padding="max_length", max_length=CONTEXT).input_ids
    assert ids[0] == tok.bos_token_id and len(ids) == CONTEXT


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meta", required=True, help="a world export's meta.json")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    meta = json.loads(Path(a.meta).read_text())
    words = list(meta["vocabulary"]) + list(meta.get("colors", [])) + list(meta.get("shapes", [])) + EXTRA_WORDS
    n = build(words, a.out)
    print(f"tokenizer: {n} entries, {len(set(words))} words -> {a.out}")


if __name__ == "__main__":
    main()
