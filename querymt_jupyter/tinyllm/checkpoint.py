"""Checkpoint and tokenizer files of the tinyllm engine (numpy only).

Three checkpoint layouts are read, all little-endian:

* ``fp32-legacy`` ("version 0", the layout of the public llama2.c checkpoints): seven int32
  config fields (a negative vocab_size means the classifier is not shared with the token
  embeddings), then every tensor kind in float32 concatenated over the layers, two unused
  RoPE tables, and the classifier when it is not shared.
* ``fp32`` (version 1): a 256-byte header (magic ``ak42``, version, config, shared flag), then
  the norms first and the matrices after, all float32.
* ``int8`` (version 2): the same header plus a group size; norms in float32, every matrix
  quantised to int8 in groups of ``group_size`` values with one float32 scale per group.
  Reading dequantises, so every reader returns float32 weights.

Matrices use the PyTorch ``nn.Linear`` layout ``(out_features, in_features)``: ``y = W @ x``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

MAGIC = 0x616B3432  # b"2", b"4", b"k", b"a" on disk: "ak42" read as a little-endian uint32
HEADER_SIZE = 256
LAYER_KINDS = ("attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3")
_CONFIG = struct.Struct("<7i")


@dataclass(frozen=True)
class ModelConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool = True

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.dim * self.n_kv_heads // self.n_heads

    def problems(self) -> list[str]:
        """What makes this config impossible (empty when it is usable)."""
        out = []
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                out.append(f"{name}={getattr(self, name)} is not positive")
        if out:
            return out
        if self.dim % self.n_heads:
            out.append(f"dim={self.dim} is not a multiple of n_heads={self.n_heads}")
        elif self.head_size % 2:
            out.append(f"head_size={self.head_size} is odd (RoPE rotates pairs)")
        if self.n_heads % self.n_kv_heads:
            out.append(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        return out

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor of one layer (keyed by kind) and of the global ones."""
        d, h, kv = self.dim, self.hidden_dim, self.kv_dim
        return {
            "tok_embeddings": (self.vocab_size, d),
            "attention_norm": (d,), "wq": (d, d), "wk": (kv, d), "wv": (kv, d), "wo": (d, d),
            "ffn_norm": (d,), "w1": (h, d), "w2": (d, h), "w3": (h, d),
            "norm": (d,), "output": (self.vocab_size, d),
        }

    def n_params(self) -> int:
        """Parameter count (the classifier counted only when it is not shared)."""
        s = self.shapes()
        per_layer = sum(int(np.prod(s[k])) for k in LAYER_KINDS)
        n = self.vocab_size * self.dim + self.n_layers * per_layer + self.dim
        return n + (0 if self.shared_classifier else self.vocab_size * self.dim)


class Weights(dict):
    """float32 tensors keyed ``tok_embeddings``, ``layers.{i}.{kind}``, ``norm`` and ``output``.

    ``output`` is present only when the classifier is not shared; :meth:`classifier` gives
    the matrix in use either way.
    """

    def layer(self, i: int, kind: str) -> np.ndarray:
        return self[f"layers.{i}.{kind}"]

    def stacked(self, kind: str, n_layers: int) -> Iterator[np.ndarray]:
        for i in range(n_layers):
            yield self[f"layers.{i}.{kind}"]

    def classifier(self) -> np.ndarray:
        return self["output"] if "output" in self else self["tok_embeddings"]

    def check(self, cfg: ModelConfig) -> None:
        """Raise ValueError unless every tensor is there with the shape ``cfg`` asks for."""
        shapes = cfg.shapes()
        want = {"tok_embeddings": shapes["tok_embeddings"], "norm": shapes["norm"]}
        for i in range(cfg.n_layers):
            for k in LAYER_KINDS:
                want[f"layers.{i}.{k}"] = shapes[k]
        if not cfg.shared_classifier:
            want["output"] = shapes["output"]
        for name, shape in want.items():
            if name not in self:
                raise ValueError(f"weights lack {name!r}")
            if tuple(self[name].shape) != shape:
                raise ValueError(f"weights {name!r} has shape {self[name].shape}, config wants {shape}")


def random_weights(cfg: ModelConfig, seed: int = 0, scale: float = 0.05) -> Weights:
    """Small random weights (norm weights around 1): for tests and dev models."""
    rng = np.random.default_rng(seed)
    s = cfg.shapes()
    w = Weights()

    def mk(shape, norm=False):
        a = rng.standard_normal(shape).astype(np.float32) * scale
        return (a + 1.0).astype(np.float32) if norm else a

    w["tok_embeddings"] = mk(s["tok_embeddings"])
    for i in range(cfg.n_layers):
        for k in LAYER_KINDS:
            w[f"layers.{i}.{k}"] = mk(s[k], norm=k.endswith("norm"))
    w["norm"] = mk(s["norm"], norm=True)
    if not cfg.shared_classifier:
        w["output"] = mk(s["output"])
    return w


def rope_tables(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of pos*freq, (seq_len, head_size/2): the unused tables of the legacy layout."""
    hs = cfg.head_size
    freq = 10000.0 ** (-np.arange(0, hs, 2, dtype=np.float64) / hs)
    ang = np.arange(cfg.seq_len, dtype=np.float64)[:, None] * freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


# ---------------------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, path: Path, data: bytes, offset: int) -> None:
        self.path, self.data, self.pos = path, data, offset

    def take(self, n_bytes: int, what: str) -> bytes:
        end = self.pos + n_bytes
        if end > len(self.data):
            raise ValueError(
                f"{self.path}: truncated: {what} needs bytes {self.pos}..{end}, the file has {len(self.data)}"
            )
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def f32(self, shape: tuple[int, ...], what: str) -> np.ndarray:
        n = int(np.prod(shape))
        return np.frombuffer(self.take(4 * n, what), dtype="<f4").astype(np.float32).reshape(shape)

    def q8(self, shape: tuple[int, ...], group_size: int, what: str) -> np.ndarray:
        n = int(np.prod(shape))
        q = np.frombuffer(self.take(n, what + " (int8 values)"), dtype=np.int8)
        scales = np.frombuffer(self.take(4 * (n // group_size), what + " (scales)"), dtype="<f4")
        w = q.reshape(-1, group_size).astype(np.float32) * scales.astype(np.float32)[:, None]
        return w.reshape(shape)

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(
                f"{self.path}: inconsistent size: the config accounts for {self.pos} bytes, "
                f"the file has {len(self.data)}"
            )


def _config(path: Path, fields: tuple[int, ...], shared: bool) -> ModelConfig:
    dim, hidden, layers, heads, kv_heads, vocab, seq = fields
    cfg = ModelConfig(dim, hidden, layers, heads, kv_heads, vocab, seq, shared)
    bad = cfg.problems()
    if bad:
        raise ValueError(f"{path}: not a tinyllm checkpoint (bad magic or config): {'; '.join(bad)}")
    return cfg


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, Weights, str]:
    """Read any of the three layouts: ``(config, float32 weights, fmt)``.

    ``fmt`` is ``"fp32-legacy"``, ``"fp32"`` or ``"int8"``. Raises ValueError naming the file
    when it is truncated, has a bad magic/version or a size its config does not account for.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path}: truncated: {len(data)} bytes, not even a header")
    (magic,) = struct.unpack_from("<I", data, 0)
    if magic == MAGIC:
        return _read_versioned(path, data)
    return _read_legacy(path, data)


def _read_legacy(path: Path, data: bytes) -> tuple[ModelConfig, Weights, str]:
    if len(data) < _CONFIG.size:
        raise ValueError(f"{path}: truncated: {len(data)} bytes, the legacy header needs {_CONFIG.size}")
    fields = list(_CONFIG.unpack_from(data, 0))
    shared = fields[5] > 0
    fields[5] = abs(fields[5])
    cfg = _config(path, tuple(fields), shared)
    r = _Reader(path, data, _CONFIG.size)
    s, L = cfg.shapes(), cfg.n_layers
    w = Weights()
    w["tok_embeddings"] = r.f32(s["tok_embeddings"], "tok_embeddings")
    for k in LAYER_KINDS:
        arr = r.f32((L, *s[k]), k)
        for i in range(L):
            w[f"layers.{i}.{k}"] = arr[i]
    w["norm"] = r.f32(s["norm"], "norm")
    half = cfg.seq_len * cfg.head_size // 2
    r.take(4 * half, "RoPE cos table")
    r.take(4 * half, "RoPE sin table")
    if not shared:
        w["output"] = r.f32(s["output"], "output")
    r.finish()
    return cfg, w, "fp32-legacy"


def _read_versioned(path: Path, data: bytes) -> tuple[ModelConfig, Weights, str]:
    if len(data) < HEADER_SIZE:
        raise ValueError(f"{path}: truncated: {len(data)} bytes, the header needs {HEADER_SIZE}")
    (version,) = struct.unpack_from("<i", data, 4)
    if version not in (1, 2):
        raise ValueError(f"{path}: unsupported checkpoint version {version} (this reader knows 1 and 2)")
    fields = _CONFIG.unpack_from(data, 8)
    shared = bool(data[8 + _CONFIG.size])
    cfg = _config(path, fields, shared)
    r = _Reader(path, data, HEADER_SIZE)
    s, L = cfg.shapes(), cfg.n_layers
    w = Weights()
    for k in ("attention_norm", "ffn_norm"):
        arr = r.f32((L, *s[k]), k)
        for i in range(L):
            w[f"layers.{i}.{k}"] = arr[i]
    w["norm"] = r.f32(s["norm"], "norm")
    matrices = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
    if version == 1:
        w["tok_embeddings"] = r.f32(s["tok_embeddings"], "tok_embeddings")
        for k in matrices:
            arr = r.f32((L, *s[k]), k)
            for i in range(L):
                w[f"layers.{i}.{k}"] = arr[i]
        if not shared:
            w["output"] = r.f32(s["output"], "output")
        r.finish()
        return cfg, w, "fp32"
    (gs,) = struct.unpack_from("<i", data, 9 + _CONFIG.size)
    if gs <= 0 or cfg.dim % gs or cfg.hidden_dim % gs:
        raise ValueError(f"{path}: group_size={gs} does not divide dim={cfg.dim} and hidden_dim={cfg.hidden_dim}")
    w["tok_embeddings"] = r.q8(s["tok_embeddings"], gs, "tok_embeddings")
    for k in matrices:
        for i in range(L):
            w[f"layers.{i}.{k}"] = r.q8(s[k], gs, f"layers.{i}.{k}")
    if not shared:
        w["output"] = r.q8(s["output"], gs, "output")
    r.finish()
    return cfg, w, "int8"


# ---------------------------------------------------------------------------------------- writing


def _f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def _stack(cfg: ModelConfig, w: Weights, kind: str) -> bytes:
    return b"".join(_f32(a) for a in w.stacked(kind, cfg.n_layers))


def _fields(cfg: ModelConfig) -> tuple[int, ...]:
    return (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size, cfg.seq_len)


def write_legacy_fp32(path: str | Path, cfg: ModelConfig, w: Weights) -> None:
    """Write the llama2.c "version 0" layout (negative vocab_size when the classifier is unshared)."""
    w.check(cfg)
    fields = list(_fields(cfg))
    if not cfg.shared_classifier:
        fields[5] = -fields[5]
    parts = [_CONFIG.pack(*fields), _f32(w["tok_embeddings"])]
    parts += [_stack(cfg, w, k) for k in LAYER_KINDS]
    parts.append(_f32(w["norm"]))
    cos, sin = rope_tables(cfg)
    parts += [_f32(cos), _f32(sin)]
    if not cfg.shared_classifier:
        parts.append(_f32(w["output"]))
    Path(path).write_bytes(b"".join(parts))


def _header(cfg: ModelConfig, version: int, group_size: int | None = None) -> bytes:
    h = struct.pack("<Ii", MAGIC, version) + _CONFIG.pack(*_fields(cfg)) + bytes([int(cfg.shared_classifier)])
    if group_size is not None:
        h += struct.pack("<i", group_size)
    return h + b"\0" * (HEADER_SIZE - len(h))


def write_fp32_v1(path: str | Path, cfg: ModelConfig, w: Weights) -> None:
    """Write the version 1 layout: header, norms, then every matrix in float32."""
    w.check(cfg)
    parts = [_header(cfg, 1), _stack(cfg, w, "attention_norm"), _stack(cfg, w, "ffn_norm"), _f32(w["norm"])]
    parts.append(_f32(w["tok_embeddings"]))
    parts += [_stack(cfg, w, k) for k in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")]
    if not cfg.shared_classifier:
        parts.append(_f32(w["output"]))
    Path(path).write_bytes(b"".join(parts))


def group_size_of(path: str | Path) -> int | None:
    """The int8 group size recorded in a version 2 checkpoint's header; None for the fp32 layouts."""
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE or struct.unpack_from("<Ii", head) != (MAGIC, 2):
        return None
    return struct.unpack_from("<i", head, 9 + _CONFIG.size)[0]


def group_size_for(cfg: ModelConfig, start: int = 64) -> int:
    """The int8 group size: ``start`` halved until it divides dim and hidden_dim.

    Both, because a group never spans two rows: the engine quantises each matrix's input vector
    (of length dim, or hidden_dim for w2) in groups of the same size.
    """
    gs = start
    while cfg.dim % gs or cfg.hidden_dim % gs:
        gs //= 2
    return gs


def quantize_q8(a: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per group: ``(q int8, scales float32)``; w ≈ q * scale."""
    g = np.asarray(a, dtype=np.float32).reshape(-1, group_size)
    scale = (np.abs(g).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scale == 0, np.float32(1), scale)
    q = np.where(scale[:, None] == 0, 0, np.clip(np.round(g / safe[:, None]), -127, 127))
    return q.astype(np.int8), scale


def write_int8(path: str | Path, cfg: ModelConfig, w: Weights, group_size: int = 64) -> int:
    """Write the version 2 layout (int8 groups); returns the group size used."""
    w.check(cfg)
    gs = group_size_for(cfg, group_size)
    parts = [_header(cfg, 2, gs), _stack(cfg, w, "attention_norm"), _stack(cfg, w, "ffn_norm"), _f32(w["norm"])]

    def q(a: np.ndarray) -> None:
        values, scales = quantize_q8(a, gs)
        parts.append(values.tobytes())
        parts.append(_f32(scales))

    q(w["tok_embeddings"])
    for k in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
        for a in w.stacked(k, cfg.n_layers):
            q(a)
    if not cfg.shared_classifier:
        q(w["output"])
    Path(path).write_bytes(b"".join(parts))
    return gs


# -------------------------------------------------------------------------------------- tokenizer


def read_tokenizer(path: str | Path, vocab_size: int) -> tuple[list[bytes], list[float], int]:
    """Read ``vocab_size`` tokens: ``(pieces, scores, max_token_length)``."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path}: truncated: {len(data)} bytes, the tokenizer header needs 4")
    (max_len,) = struct.unpack_from("<i", data, 0)
    if max_len <= 0:
        raise ValueError(f"{path}: not a tokenizer file: max_token_length={max_len}")
    pos, pieces, scores = 4, [], []
    for i in range(vocab_size):
        if pos + 8 > len(data):
            raise ValueError(f"{path}: truncated: token {i} of {vocab_size} starts past the end ({len(data)} bytes)")
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        if n < 0 or n > max_len or pos + n > len(data):
            raise ValueError(
                f"{path}: token {i} has byte length {n} (max_token_length {max_len}, {len(data) - pos} bytes left)"
            )
        pieces.append(data[pos:pos + n])
        scores.append(score)
        pos += n
    return pieces, scores, max_len


def write_tokenizer(path: str | Path, pieces: list[bytes], scores: list[float]) -> None:
    """Write the tokenizer file (max_token_length, then score, length and bytes per token)."""
    if len(pieces) != len(scores):
        raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
    max_len = max((len(p) for p in pieces), default=1) or 1
    parts = [struct.pack("<i", max_len)]
    for p, s in zip(pieces, scores):
        parts.append(struct.pack("<fi", s, len(p)) + bytes(p))
    Path(path).write_bytes(b"".join(parts))
