"""The tinyllm file formats, tokenizer and numpy reference (no torch, no C engine)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from querymt_jupyter.tinyllm import BUNDLED_CHECKPOINT, BUNDLED_TOKENIZER
from querymt_jupyter.tinyllm.checkpoint import (
    ModelConfig,
    random_weights,
    read_checkpoint,
    read_tokenizer,
    write_fp32_v1,
    write_int8,
    write_legacy_fp32,
    write_tokenizer,
)
from querymt_jupyter.tinyllm.reference import Reference, Tokenizer
from querymt_jupyter.tinyllm.tokenizer_train import chunks, encode_chunked, train_bpe

KJV_LIKE = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good: and God divided the light from the darkness.",
    "And the LORD said unto Moses, Speak unto the children of Israel, that they go forward.",
    "Jesus wept.",
    "The LORD is my shepherd; I shall not want.",
    "For God so loved the world, that he gave his only begotten Son (John 3:16)!",
] * 3

SHARED = ModelConfig(dim=32, hidden_dim=80, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, seq_len=32)
UNSHARED = ModelConfig(dim=48, hidden_dim=96, n_layers=1, n_heads=3, n_kv_heads=3, vocab_size=300, seq_len=16,
                       shared_classifier=False)


@pytest.fixture(scope="module")
def tokenizer_pieces():
    return train_bpe(KJV_LIKE, vocab_size=400)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, tokenizer_pieces):
    d = tmp_path_factory.mktemp("tinyllm")
    pieces, scores = tokenizer_pieces
    cfg = ModelConfig(32, 80, 2, 4, 2, len(pieces), 48, True)
    write_tokenizer(d / "tok.bin", pieces, scores)
    write_legacy_fp32(d / "m.bin", cfg, random_weights(cfg, seed=3, scale=0.2))
    return Reference(d / "m.bin", d / "tok.bin")


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("cfg", [SHARED, UNSHARED], ids=["shared", "unshared"])
def test_fp32_round_trips(tmp_path, cfg):
    w = random_weights(cfg, seed=1)
    write_legacy_fp32(tmp_path / "v0.bin", cfg, w)
    write_fp32_v1(tmp_path / "v1.bin", cfg, w)
    for name, fmt in (("v0.bin", "fp32-legacy"), ("v1.bin", "fp32")):
        got_cfg, got, got_fmt = read_checkpoint(tmp_path / name)
        assert (got_cfg, got_fmt) == (cfg, fmt)
        assert_same(got, w)
    # the legacy header carries the unshared classifier as a negative vocab_size
    (vocab,) = struct.unpack_from("<i", (tmp_path / "v0.bin").read_bytes(), 20)
    assert vocab == (cfg.vocab_size if cfg.shared_classifier else -cfg.vocab_size)


@pytest.mark.parametrize("cfg", [SHARED, UNSHARED], ids=["shared", "unshared"])
def test_int8_round_trip_within_quantisation_error(tmp_path, cfg):
    w = random_weights(cfg, seed=2)
    gs = write_int8(tmp_path / "q8.bin", cfg, w)
    assert gs == 16  # 64 halved until it divides dim and hidden_dim (80): a group never spans two rows
    got_cfg, got, fmt = read_checkpoint(tmp_path / "q8.bin")
    assert (got_cfg, fmt) == (cfg, "int8")
    assert got.keys() == w.keys()
    for k in w:
        if k.endswith("norm"):
            np.testing.assert_array_equal(got[k], w[k])
        else:
            groups = w[k].reshape(-1, gs)
            bound = np.abs(groups).max(axis=1, keepdims=True) / 127 / 2 * 1.0001
            assert np.all(np.abs(got[k].reshape(-1, gs) - groups) <= bound), k
    size = 256 + 4 * (cfg.n_layers * 2 * cfg.dim + cfg.dim)
    n_q = sum(v.size for k, v in w.items() if not k.endswith("norm"))
    assert (tmp_path / "q8.bin").stat().st_size == size + n_q + 4 * n_q // gs


def test_bad_files_raise_clear_errors(tmp_path):
    w = random_weights(SHARED)
    for writer, name in ((write_legacy_fp32, "v0"), (write_fp32_v1, "v1"), (write_int8, "q8")):
        p = tmp_path / f"{name}.bin"
        writer(p, SHARED, w)
        data = p.read_bytes()
        (tmp_path / "cut.bin").write_bytes(data[:-7])
        with pytest.raises(ValueError, match=r"cut\.bin.*truncated"):
            read_checkpoint(tmp_path / "cut.bin")
        (tmp_path / "long.bin").write_bytes(data + b"\0" * 8)
        with pytest.raises(ValueError, match=r"long\.bin.*inconsistent size"):
            read_checkpoint(tmp_path / "long.bin")
    (tmp_path / "junk.bin").write_bytes(b"\xff" * 300)
    with pytest.raises(ValueError, match=r"junk\.bin.*bad magic"):
        read_checkpoint(tmp_path / "junk.bin")
    v1 = bytearray((tmp_path / "v1.bin").read_bytes())
    v1[4:8] = struct.pack("<i", 7)
    (tmp_path / "v7.bin").write_bytes(bytes(v1))
    with pytest.raises(ValueError, match=r"v7\.bin.*version 7"):
        read_checkpoint(tmp_path / "v7.bin")
    (tmp_path / "tiny.bin").write_bytes(b"\x01")
    with pytest.raises(ValueError, match="truncated"):
        read_checkpoint(tmp_path / "tiny.bin")


def test_tokenizer_file_round_trip(tmp_path, tokenizer_pieces):
    pieces, scores = tokenizer_pieces
    write_tokenizer(tmp_path / "t.bin", pieces, scores)
    got_pieces, got_scores, max_len = read_tokenizer(tmp_path / "t.bin", len(pieces))
    assert got_pieces == pieces
    assert got_scores == [np.float32(s) for s in scores]
    assert max_len == max(len(p) for p in pieces)
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"cut\.bin"):
        read_tokenizer(tmp_path / "cut.bin", len(pieces))


def test_vocabulary_layout(tokenizer_pieces):
    pieces, scores = tokenizer_pieces
    assert len(pieces) == 400
    assert pieces[:3] == [b"<unk>", b"<s>", b"</s>"]
    assert pieces[3] == b"<0x00>" and pieces[258] == b"<0xFF>"
    assert b" " in pieces and b" the" in pieces
    n_chars = sum(len(p.decode()) == 1 for p in pieces[259:])
    chars, merges = scores[259:259 + n_chars], scores[259 + n_chars:]
    assert all(len(p.decode()) == 1 for p in pieces[259:259 + n_chars])
    assert chars == sorted(chars, reverse=True) and merges == sorted(merges, reverse=True)
    assert merges[0] == 0 and max(chars) < min(merges)
    assert all(len(c) for c in chunks(" And God said, Let there be light:"))


def test_encode_decode_round_trip(small_model):
    tok = small_model.tokenizer
    for text in KJV_LIKE[:8] + ["Grüße, naïve café — 東京 🙂", "tabs\tand  double  spaces\n"]:
        ids = small_model.encode(text, bos=True, eos=True)
        assert ids[0] == 1 and ids[-1] == 2
        assert tok.decode(ids[1:-1]).decode("utf-8") == text
        assert ids[1] == tok.ids[b" "] or tok.pieces[ids[1]].startswith(b" ")
    assert small_model.encode("", bos=True) == [1]
    ids = small_model.encode("東", bos=False)  # unseen character: byte fallback after the dummy space
    assert ids[1:] == [b + 3 for b in "東".encode()]
    assert small_model.decode_piece(1, tok.ids[b" the"]) == b"the"
    assert small_model.decode_piece(5, tok.ids[b" the"]) == b" the"
    assert small_model.decode_piece(5, 3 + 0xE6) == b"\xe6"


def test_chunked_encoding_matches_whole_text(small_model):
    tok = small_model.tokenizer
    lines = KJV_LIKE[:8] + ["Grüße (naïve)!", "  two spaces"]
    want = [t for line in lines for t in tok.encode(line, bos=True)]
    assert encode_chunked(tok, lines) == want


def test_merges_follow_scores():
    pieces = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    pieces += [b" ", b"a", b"b", b"ab", b" a", b"bab"]
    scores = [0.0] * 259 + [-1e6, -1e6, -1e6, -1.0, 0.0, -2.0]
    tok = Tokenizer(pieces, scores)
    i = {p: n for n, p in enumerate(pieces)}
    # " a" (score 0) before "ab" (-1) before "bab" (-2)
    assert tok.encode("abab", bos=False) == [i[b" a"], i[b"bab"]]
    # equal scores: the first pair wins ("ab" at 1 before "ba" at 2)
    tok = Tokenizer(pieces[:262] + [b"ab", b"ba"], scores[:262] + [-1.0, -1.0])
    assert tok.encode("abab", bos=False) == [259, 262, 262]
    assert tok.encode("abab", bos=True, eos=True) == [1, 259, 262, 262, 2]


def test_forward_prefix_consistency_and_embed(small_model):
    ids = small_model.encode("And God said, Let there be light: and there was light.")
    full = small_model.forward(ids)
    assert full.dtype == np.float32 and full.shape == (len(ids), small_model.config.vocab_size)
    prefix = small_model.forward(ids[:5])
    np.testing.assert_allclose(prefix, full[:5], rtol=0, atol=1e-5)
    e = small_model.embed("Jesus wept.")
    assert e.shape == (small_model.config.dim,) and abs(np.linalg.norm(e) - 1) < 1e-5
    out = small_model.generate_greedy("In the beginning", 5)
    assert out[:len(small_model.encode("In the beginning"))] == small_model.encode("In the beginning")
    assert len(out) == len(small_model.encode("In the beginning")) + 5


def test_formats_give_the_same_logits(tmp_path, small_model):
    cfg, w = small_model.config, small_model.weights
    tok = tmp_path / "tok.bin"
    write_tokenizer(tok, small_model.tokenizer.pieces, small_model.tokenizer.scores)
    write_fp32_v1(tmp_path / "v1.bin", cfg, w)
    write_int8(tmp_path / "q8.bin", cfg, w)
    ids = small_model.encode("The LORD is my shepherd")
    want = small_model.forward(ids)
    np.testing.assert_array_equal(Reference(tmp_path / "v1.bin", tok).forward(ids), want)
    q8 = Reference(tmp_path / "q8.bin", tok).forward(ids)
    assert np.abs(q8 - want).max() < 0.1 * np.abs(want).max()


@pytest.mark.skipif(not BUNDLED_CHECKPOINT.exists(), reason="the bundled model is not trained yet")
def test_bundled_model_continues_sensibly():
    ref = Reference(BUNDLED_CHECKPOINT, BUNDLED_TOKENIZER)
    assert ref.format == "int8"
    prompt = ref.encode("And the LORD said unto")
    out = ref.generate_greedy("And the LORD said unto", 12)
    new = out[len(prompt):]
    assert len(set(new)) > 3
    text = ref.decode(out[1:])
    assert text.startswith("And the LORD said unto") and len(text) > 40
