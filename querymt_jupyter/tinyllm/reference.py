"""A numpy reference of the tinyllm engine: the semantics the C plugin implements.

Arithmetic is float64 throughout (weights are read as float32 and widened), and the logits
and embeddings are cast to float32 at the end: this is the "exact" answer the float32 C
engine is compared against, with a tolerance.

Model: Llama-style decoder. Per layer, ``x += wo(attn(rope(wq n), rope(wk n), wv n))`` with
``n = rmsnorm(x, attention_norm)``, then ``x += w2(silu(w1 n) * w3 n)`` with
``n = rmsnorm(x, ffn_norm)``; finally ``logits = classifier(rmsnorm(x, norm))``.
RMSNorm divides by ``sqrt(mean(x²) + 1e-5)``; RoPE rotates the pairs ``(2i, 2i+1)`` of every
head by ``pos * 10000^(-2i/head_size)``; query head ``h`` reads key/value head
``h // (n_heads / n_kv_heads)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .checkpoint import ModelConfig, Weights, group_size_of, read_checkpoint, read_tokenizer

BOS, EOS = 1, 2
EPS = 1e-5
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


class Tokenizer:
    """The llama2.c-style BPE tokenizer: greedy highest-score merges with byte fallback."""

    def __init__(self, pieces: list[bytes], scores: list[float]) -> None:
        self.pieces = list(pieces)
        self.scores = [float(s) for s in scores]
        self.ids: dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            self.ids.setdefault(p, i)  # the lowest id wins when pieces repeat

    @classmethod
    def load(cls, path: str | Path, vocab_size: int) -> "Tokenizer":
        pieces, scores, _ = read_tokenizer(path, vocab_size)
        return cls(pieces, scores)

    @staticmethod
    def _chars(data: bytes) -> list[bytes]:
        """Split UTF-8 bytes into characters; an invalid byte is a character of its own."""
        out, i, n = [], 0, len(data)
        while i < n:
            b = data[i]
            size = 1 if b < 0x80 else 2 if 0xC0 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if 0xF0 <= b < 0xF8 else 1
            chunk = data[i:i + size]
            if size > 1:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    size, chunk = 1, data[i:i + 1]
            out.append(chunk)
            i += size
        return out

    def encode(self, text: str | bytes, bos: bool = True, eos: bool = False) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        tokens: list[int] = [BOS] if bos else []
        body: list[int] = []
        if data and b" " in self.ids:
            body.append(self.ids[b" "])
        for ch in self._chars(data):
            if ch in self.ids:
                body.append(self.ids[ch])
            else:
                body.extend(b + 3 for b in ch)
        body = self.merge(body)
        tokens += body
        if eos:
            tokens.append(EOS)
        return tokens

    def merge(self, body: list[int]) -> list[int]:
        """Apply the greedy merges to a token list (in place semantics of the C engine)."""
        pieces, ids, scores = self.pieces, self.ids, self.scores
        while True:
            best, best_id, best_i = -float("inf"), -1, -1
            for i in range(len(body) - 1):
                j = ids.get(pieces[body[i]] + pieces[body[i + 1]])
                if j is not None and scores[j] > best:
                    best, best_id, best_i = scores[j], j, i
            if best_i < 0:
                return body
            body[best_i:best_i + 2] = [best_id]

    def decode_piece(self, prev: int, token: int) -> bytes:
        piece = self.pieces[token]
        if prev == BOS and piece.startswith(b" "):
            piece = piece[1:]
        m = _BYTE_PIECE.fullmatch(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        return piece

    def decode(self, tokens: list[int], prev: int = BOS) -> bytes:
        out = []
        for t in tokens:
            out.append(self.decode_piece(prev, t))
            prev = t
        return b"".join(out)


def rmsnorm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x * w / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS)


def rope(x: np.ndarray, n_heads: int, head_size: int, pos0: int = 0) -> np.ndarray:
    """Rotate pairs (2i, 2i+1) of each head of x (T, n_heads*head_size) by pos*freq_i."""
    T = x.shape[0]
    freq = 10000.0 ** (-np.arange(0, head_size, 2, dtype=np.float64) / head_size)
    ang = (np.arange(pos0, pos0 + T, dtype=np.float64)[:, None] * freq[None, :])[:, None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    h = x.reshape(T, n_heads, head_size // 2, 2)
    a, b = h[..., 0], h[..., 1]
    out = np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1)
    return out.reshape(T, n_heads * head_size)


def quantized(x: np.ndarray, group_size: int) -> np.ndarray:
    """x as the int8 engine sees a matrix's input: float32 groups, each divided by max|x|/127 and rounded
    to the nearest integer (ties to even), then scaled back (the dot products of integers are exact)."""
    g = x.astype(np.float32).reshape(*x.shape[:-1], -1, group_size)
    scale = np.abs(g).max(axis=-1, keepdims=True) / np.float32(127)
    v = np.divide(g, scale, out=np.zeros_like(g), where=scale != 0)
    q = np.rint(v)
    return (q.astype(np.float64) * scale).reshape(x.shape)


def silu(z: np.ndarray) -> np.ndarray:
    return z / (1.0 + np.exp(-z))


class Reference:
    """Load a checkpoint (any layout) and tokenizer; run the model in numpy."""

    def __init__(self, checkpoint_path: str | Path, tokenizer_path: str | Path) -> None:
        cfg, w, fmt = read_checkpoint(checkpoint_path)
        self.config: ModelConfig = cfg
        self.format = fmt
        self.weights: Weights = w
        self._w = {k: v.astype(np.float64) for k, v in w.items()}
        # int8 checkpoints: the engine also quantises every matrix's input (llama2.c's runq does the same)
        self.group_size = group_size_of(checkpoint_path) if fmt == "int8" else None
        self.tokenizer = Tokenizer.load(tokenizer_path, cfg.vocab_size)

    # tokenizer
    def encode(self, text: str | bytes, bos: bool = True, eos: bool = False) -> list[int]:
        return self.tokenizer.encode(text, bos, eos)

    def decode_piece(self, prev_token: int, token: int) -> bytes:
        return self.tokenizer.decode_piece(prev_token, token)

    def decode(self, tokens: list[int], prev: int = BOS) -> str:
        return self.tokenizer.decode(tokens, prev).decode("utf-8", errors="replace")

    # model
    def hidden(self, tokens: list[int]) -> np.ndarray:
        """Final hidden states after the final RMSNorm, (T, dim) float64."""
        cfg, w = self.config, self._w
        T = len(tokens)
        if T == 0:
            raise ValueError("no tokens")
        if T > cfg.seq_len:
            raise ValueError(f"{T} tokens exceed seq_len={cfg.seq_len}")
        if min(tokens) < 0 or max(tokens) >= cfg.vocab_size:
            raise ValueError(f"token id out of range 0..{cfg.vocab_size - 1}")
        hs, H, KV = cfg.head_size, cfg.n_heads, cfg.n_kv_heads
        group = H // KV
        x = w["tok_embeddings"][np.asarray(tokens)]
        lin = self._linear
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        for layer in range(cfg.n_layers):
            p = f"layers.{layer}."
            n = rmsnorm(x, w[p + "attention_norm"])
            q = rope(lin(n, p + "wq"), H, hs).reshape(T, H, hs)
            k = rope(lin(n, p + "wk"), KV, hs).reshape(T, KV, hs)
            v = lin(n, p + "wv").reshape(T, KV, hs)
            out = np.empty((T, H, hs))
            for h in range(H):
                kh = h // group
                s = q[:, h, :] @ k[:, kh, :].T / np.sqrt(hs) + mask
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                out[:, h, :] = s @ v[:, kh, :]
            x = x + lin(out.reshape(T, cfg.dim), p + "wo")
            n = rmsnorm(x, w[p + "ffn_norm"])
            x = x + lin(silu(lin(n, p + "w1")) * lin(n, p + "w3"), p + "w2")
        return rmsnorm(x, w["norm"])

    def forward(self, tokens: list[int]) -> np.ndarray:
        """Logits for every position, (len(tokens), vocab_size) float32."""
        return self._linear(self.hidden(tokens), "output" if "output" in self._w else "tok_embeddings").astype(np.float32)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        if self.group_size:
            x = quantized(x, self.group_size)
        return x @ self._w[name].T

    def generate_greedy(self, prompt: str, n: int) -> list[int]:
        """The prompt's tokens (with BOS) followed by ``n`` argmax tokens (lowest index on ties)."""
        return self.generate(prompt, n, temperature=0.0)

    def generate(self, prompt: str, n: int, temperature: float = 0.0, seed: int = 0) -> list[int]:
        """Prompt tokens then ``n`` sampled tokens (greedy at temperature 0); window-limited to seq_len."""
        tokens = self.encode(prompt, bos=True)
        rng = np.random.default_rng(seed)
        for _ in range(n):
            if len(tokens) >= self.config.seq_len:
                break
            logits = self.forward(tokens)[-1].astype(np.float64)
            if temperature <= 0:
                nxt = int(np.argmax(logits))
            else:
                p = np.exp((logits - logits.max()) / temperature)
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            tokens.append(nxt)
        return tokens

    def embed(self, text: str) -> np.ndarray:
        """Mean over positions of the final (normed) hidden state of ``encode(text, bos=True)``, L2-normalised."""
        h = self.hidden(self.encode(text, bos=True)).mean(axis=0)
        norm = np.linalg.norm(h)
        return (h / norm if norm > 0 else h).astype(np.float32)
