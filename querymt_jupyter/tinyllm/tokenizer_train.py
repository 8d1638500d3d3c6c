"""Train a BPE vocabulary in the llama2.c ``tokenizer.bin`` layout (pure Python).

Vocabulary order:

* 0, 1, 2: ``<unk>``, ``<s>``, ``</s>`` (score 0);
* 3..258: byte-fallback pieces ``<0x00>``..``<0xFF>`` (score 0);
* every character of the corpus, most frequent first (scores from -1e6 down, so they
  never outrank a merge);
* the merged pieces in merge order, score ``-rank`` (the first merge scores 0): the engine's
  greedy "highest score first" rule then replays the merges in the order they were learned.

Merges are learned within chunks: a word with its leading space, a number, a run of
punctuation, or one whitespace character. No piece spans two chunks, so encoding a text
chunk by chunk (:func:`encode_chunked`, with a cache) gives the same tokens as the engine's
whole-text encoding; the training script relies on that to tokenise the corpus quickly.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from .checkpoint import write_tokenizer

SPECIALS = ["<unk>", "<s>", "</s>"]
CHUNK = re.compile(r" ?[^\W\d_]+| ?\d+| ?[^\s\w]+| ?_+|\s")


def chunks(text: str) -> list[str]:
    """Pre-split text into merge domains (see the module docstring)."""
    return CHUNK.findall(text)


def train_bpe(lines: list[str], vocab_size: int = 1024, verbose: bool = False) -> tuple[list[bytes], list[float]]:
    """Learn ``vocab_size`` pieces from ``lines`` (each encoded as the engine does: " " + line)."""
    words: Counter[str] = Counter()
    chars: Counter[str] = Counter()
    for line in lines:
        text = " " + line
        chars.update(text)
        words.update(chunks(text))
    pieces = [s.encode() for s in SPECIALS] + [f"<0x{b:02X}>".encode() for b in range(256)]
    scores = [0.0] * len(pieces)
    char_list = sorted(chars, key=lambda c: (-chars[c], c))
    if len(pieces) + len(char_list) > vocab_size:
        raise ValueError(f"vocab_size={vocab_size} is smaller than 259 + {len(char_list)} characters")
    for i, c in enumerate(char_list):
        pieces.append(c.encode())
        scores.append(-1e6 - i)

    # word symbols, pair counts and an index pair -> words containing it
    vocab_words = list(words)
    freqs = [words[w] for w in vocab_words]
    syms = [list(w) for w in vocab_words]
    pair_count: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for wi, s in enumerate(syms):
        for a, b in zip(s, s[1:]):
            pair_count[(a, b)] += freqs[wi]
            where[(a, b)].add(wi)

    n_merges = vocab_size - len(pieces)
    t0 = time.time()
    for rank in range(n_merges):
        if not pair_count:
            break
        best = max(pair_count.items(), key=lambda kv: (kv[1], _neg(kv[0])))[0]
        if pair_count[best] <= 0:
            break
        a, b = best
        new = a + b
        pieces.append(new.encode())
        scores.append(-float(rank))
        for wi in list(where.pop(best, ())):
            s, f = syms[wi], freqs[wi]
            for x, y in zip(s, s[1:]):  # remove this word's old pairs
                pair_count[(x, y)] -= f
                if pair_count[(x, y)] <= 0:
                    del pair_count[(x, y)]
                where[(x, y)].discard(wi)
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            syms[wi] = out
            for x, y in zip(out, out[1:]):
                pair_count[(x, y)] += f
                where[(x, y)].add(wi)
        pair_count.pop(best, None)
        if verbose and rank % 100 == 0:
            print(f"merge {rank}: {new!r} ({time.time() - t0:.1f}s)")
    return pieces, scores


def _neg(pair: tuple[str, str]) -> tuple:
    """Tie-break key: the lexicographically smallest pair wins under max()."""
    return tuple(-ord(c) for c in pair[0] + "\0" + pair[1])


def encode_chunked(tok, lines: list[str], bos: bool = True) -> list[int]:
    """Encode each line like ``tok.encode(line, bos)`` but chunk by chunk with a cache."""
    cache: dict[str, list[int]] = {}
    out: list[int] = []
    space = tok.ids.get(b" ")
    for line in lines:
        if bos:
            out.append(1)
        if not line:
            continue
        text = " " + line if space is not None else line
        for c in chunks(text):
            ids = cache.get(c)
            if ids is None:
                ids = tok.merge(_char_ids(tok, c))
                cache[c] = ids
            out.extend(ids)
    return out


def _char_ids(tok, text: str) -> list[int]:
    ids = []
    for ch in tok._chars(text.encode()):
        if ch in tok.ids:
            ids.append(tok.ids[ch])
        else:
            ids.extend(b + 3 for b in ch)
    return ids


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a BPE tokenizer.bin from a text file, one document per line.")
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--vocab-size", type=int, default=1024)
    args = ap.parse_args(argv)
    lines = args.corpus.read_text(encoding="utf-8").splitlines()
    pieces, scores = train_bpe(lines, args.vocab_size, verbose=True)
    write_tokenizer(args.out, pieces, scores)
    print(f"wrote {args.out}: {len(pieces)} pieces")


if __name__ == "__main__":
    main()
