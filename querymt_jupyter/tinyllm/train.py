"""Train the bundled tinyllm model on the King James Bible (a developer tool; needs torch).

Nothing else in the package imports this module, and torch is imported only inside the
functions that need it. The package's own ``__init__`` imports the kernel's dependencies,
which a torch-only venv lacks, so run this file as a script: it then loads the tinyllm
subpackage without the rest of ``querymt_jupyter``::

    python -m venv /work/train-venv && /work/train-venv/bin/pip install torch==2.13.0 numpy
    /work/train-venv/bin/python querymt_jupyter/tinyllm/train.py --help
    /work/train-venv/bin/python querymt_jupyter/tinyllm/train.py train --debs DIR   # or --kjv-txt FILE
    python -m querymt_jupyter.tinyllm.train plot     # loss.png, with the dev venv (matplotlib)

Steps of ``train``: corpus extraction and preprocessing (one verse per line), BPE tokenizer
training, tokenising (BOS before every verse), training a Llama-style model with AdamW and a
warm-up + cosine schedule, periodic evaluation on the last 2% of verses, the loss CSV, and
the export: int8 checkpoint and tokenizer into ``querymt_jupyter/models``, an fp32 legacy
copy into the work directory, and a self-check that the numpy reference gives the torch
model's logits.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the subpackage importable without the package's __init__
    import types

    _pkg_dir = Path(__file__).resolve().parents[1]
    if "querymt_jupyter" not in sys.modules:
        _stub = types.ModuleType("querymt_jupyter")
        _stub.__path__ = [str(_pkg_dir)]
        sys.modules["querymt_jupyter"] = _stub

import argparse
import csv
import json
import math
import re
import subprocess
import tempfile
import time

import numpy as np

from querymt_jupyter.tinyllm import BUNDLED_CHECKPOINT, BUNDLED_TOKENIZER
from querymt_jupyter.tinyllm.checkpoint import (
    LAYER_KINDS,
    ModelConfig,
    Weights,
    write_int8,
    write_legacy_fp32,
    write_tokenizer,
)
from querymt_jupyter.tinyllm.reference import Reference, Tokenizer
from querymt_jupyter.tinyllm.tokenizer_train import encode_chunked, train_bpe

HERE = Path(__file__).resolve().parent
VERSE = re.compile(r"^ +\d+ (.*)$")
BIBLE_RANGE = "Gen1:1-Rev22:21"


# ------------------------------------------------------------------------------------------ corpus


def extract_kjv(debs: Path, out_txt: Path) -> None:
    """Unpack the two Debian packages and let their ``bible`` program print the whole text."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for deb in sorted(debs.glob("bible-kjv*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        text = subprocess.run(
            [str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "-l0", BIBLE_RANGE],
            check=True, capture_output=True,
        ).stdout
    out_txt.write_bytes(text)


def verses(kjv_txt: Path) -> list[str]:
    """One verse per line: chapter headings and blank lines dropped, the verse number stripped."""
    out = []
    for line in kjv_txt.read_text(encoding="utf-8").splitlines():
        m = VERSE.match(line)
        if m:
            out.append(m.group(1))
    return out


# ------------------------------------------------------------------------------------------- model


def build_model(cfg: ModelConfig):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight

    def rotate(x, cos, sin):  # x (B, T, H, hs): pairs (2i, 2i+1) turned by angle pos*freq_i
        a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d, h, kv = cfg.dim, cfg.hidden_dim, cfg.kv_dim
            self.attention_norm = RMSNorm(d)
            self.wq, self.wk = nn.Linear(d, d, bias=False), nn.Linear(d, kv, bias=False)
            self.wv, self.wo = nn.Linear(d, kv, bias=False), nn.Linear(d, d, bias=False)
            self.ffn_norm = RMSNorm(d)
            self.w1, self.w2, self.w3 = nn.Linear(d, h, bias=False), nn.Linear(h, d, bias=False), nn.Linear(d, h, bias=False)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            hs = cfg.head_size
            n = self.attention_norm(x)
            q = rotate(self.wq(n).view(B, T, cfg.n_heads, hs), cos, sin).transpose(1, 2)
            k = rotate(self.wk(n).view(B, T, cfg.n_kv_heads, hs), cos, sin).transpose(1, 2)
            v = self.wv(n).view(B, T, cfg.n_kv_heads, hs).transpose(1, 2)
            if cfg.n_kv_heads != cfg.n_heads:
                rep = cfg.n_heads // cfg.n_kv_heads
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.wo(a.transpose(1, 2).reshape(B, T, cfg.dim))
            n = self.ffn_norm(x)
            return x + self.w2(F.silu(self.w1(n)) * self.w3(n))

    class Llama(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
            self.layers = nn.ModuleList(Block() for _ in range(cfg.n_layers))
            self.norm = RMSNorm(cfg.dim)
            self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
            self.output.weight = self.tok_embeddings.weight  # tied classifier
            hs = cfg.head_size
            freq = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
            ang = torch.arange(cfg.seq_len, dtype=torch.float64)[:, None] * freq[None, :]
            self.register_buffer("cos", ang.cos().float()[:, None, :], persistent=False)  # (T, 1, hs/2)
            self.register_buffer("sin", ang.sin().float()[:, None, :], persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("wo.weight", "w2.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, tokens):
            T = tokens.shape[1]
            x = self.tok_embeddings(tokens)
            for layer in self.layers:
                x = layer(x, self.cos[:T], self.sin[:T])
            return self.output(self.norm(x))

    return Llama()


def torch_weights(model, cfg: ModelConfig) -> Weights:
    sd = {k: v.detach().cpu().float().numpy().copy() for k, v in model.state_dict().items()}
    w = Weights()
    w["tok_embeddings"] = sd["tok_embeddings.weight"]
    for i in range(cfg.n_layers):
        for k in LAYER_KINDS:
            w[f"layers.{i}.{k}"] = sd[f"layers.{i}.{k}.weight"]
    w["norm"] = sd["norm.weight"]
    return w


# ------------------------------------------------------------------------------------------ train


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * t))


def prepare(args) -> tuple[Tokenizer, np.ndarray, np.ndarray, list[str]]:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    kjv_txt = args.kjv_txt
    if kjv_txt is None:
        kjv_txt = work / "kjv.txt"
        extract_kjv(args.debs, kjv_txt)
    lines = verses(kjv_txt)
    n_val = max(1, int(len(lines) * args.val_fraction))
    train_lines, val_lines = lines[:-n_val], lines[-n_val:]
    (work / "verses.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    t0 = time.time()
    pieces, scores = train_bpe(train_lines, args.vocab_size)
    tok_path = work / "tokenizer.bin"
    write_tokenizer(tok_path, pieces, scores)
    tok = Tokenizer(pieces, scores)
    train_ids = np.array(encode_chunked(tok, train_lines), dtype=np.int64)
    val_ids = np.array(encode_chunked(tok, val_lines), dtype=np.int64)
    print(
        f"{len(lines)} verses ({len(val_lines)} held out); tokenizer {len(pieces)} pieces in {time.time() - t0:.1f}s; "
        f"{len(train_ids)} train / {len(val_ids)} val tokens",
        flush=True,
    )
    return tok, train_ids, val_ids, val_lines


def config_from(args) -> ModelConfig:
    hidden = args.hidden_dim or 32 * round(8 * args.dim / 3 / 32)
    return ModelConfig(args.dim, hidden, args.n_layers, args.n_heads, args.n_kv_heads or args.n_heads,
                       args.vocab_size, args.seq_len, True)


def batch(data: np.ndarray, args, rng: np.random.Generator):
    import torch

    starts = rng.integers(0, len(data) - args.seq_len - 1, size=args.batch_size)
    x = np.stack([data[s:s + args.seq_len + 1] for s in starts])
    x = torch.from_numpy(x)
    return x[:, :-1], x[:, 1:]


def cmd_train(args) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    eval_rng_seed = args.seed + 1
    tok, train_ids, val_ids, _ = prepare(args)
    cfg = config_from(args)
    model = build_model(cfg)
    print(f"config {cfg}; {cfg.n_params()} parameters", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )

    def loss_of(x, y):
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1))

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        r = np.random.default_rng(eval_rng_seed)
        losses = [loss_of(*batch(val_ids, args, r)).item() for _ in range(args.eval_batches)]
        model.train()
        return float(np.mean(losses))

    args.work.mkdir(parents=True, exist_ok=True)
    csv_path = args.loss_csv
    rows = []
    t0 = time.time()
    running, n_running = 0.0, 0
    for step in range(args.steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(train_ids, args, rng)
        loss = loss_of(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        n_running += 1
        done = step + 1
        if done % args.log_every == 0:
            el = time.time() - t0
            tps = done * args.batch_size * args.seq_len / el
            print(f"step {done}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} {el:.0f}s {tps:.0f} tok/s", flush=True)
        if done % args.eval_every == 0 or done == args.steps:
            val = evaluate()
            rows.append({"step": done, "lr": f"{lr:.6g}", "train_loss": f"{running / n_running:.4f}",
                         "val_loss": f"{val:.4f}", "elapsed_s": f"{time.time() - t0:.0f}"})
            running, n_running = 0.0, 0
            print(f"eval step {done}: train {rows[-1]['train_loss']} val {val:.4f}", flush=True)
            with open(csv_path, "w", newline="") as f:
                wr = csv.DictWriter(f, fieldnames=list(rows[0]))
                wr.writeheader()
                wr.writerows(rows)
            torch.save({"config": cfg.__dict__, "model": model.state_dict(), "step": done}, args.work / "model.pt")
    wall = time.time() - t0
    (args.work / "train-summary.json").write_text(json.dumps(
        {"config": cfg.__dict__, "n_params": cfg.n_params(), "steps": args.steps, "batch_size": args.batch_size,
         "wall_s": round(wall), "final": rows[-1] if rows else None}, indent=1))
    print(f"trained in {wall:.0f}s", flush=True)
    export(model, cfg, args)


def export(model, cfg: ModelConfig, args) -> None:
    import torch

    w = torch_weights(model, cfg)
    fp32 = args.work / "tinyllm-kjv.fp32.bin"
    write_legacy_fp32(fp32, cfg, w)
    args.out_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    gs = write_int8(args.out_checkpoint, cfg, w)
    tok_path = args.work / "tokenizer.bin"
    args.out_tokenizer.write_bytes(tok_path.read_bytes())
    print(f"wrote {fp32}, {args.out_checkpoint} (int8, group {gs}), {args.out_tokenizer}", flush=True)

    ref32 = Reference(fp32, args.out_tokenizer)
    ref8 = Reference(args.out_checkpoint, args.out_tokenizer)
    texts = ["In the beginning God created the heaven and the earth.",
             "And the LORD said unto Moses, Speak unto the children of Israel",
             "Jesus wept."]
    model.eval()
    worst32 = worst8 = 0.0
    for t in texts:
        ids = ref32.encode(t)
        with torch.no_grad():
            want = model(torch.tensor([ids]))[0].double().numpy()
        d32 = float(np.abs(ref32.forward(ids) - want).max())
        d8 = float(np.abs(ref8.forward(ids) - want).max())
        worst32, worst8 = max(worst32, d32), max(worst8, d8)
    print(f"self-check: max |reference(fp32) - torch| = {worst32:.2e}; int8 file: {worst8:.3f}", flush=True)
    if worst32 > 1e-3:
        raise SystemExit(f"export self-check failed: fp32 reference differs from torch by {worst32}")


def cmd_export(args) -> None:
    """Re-export from the saved torch state (work/model.pt)."""
    import torch

    torch.set_num_threads(args.threads)
    state = torch.load(args.work / "model.pt")
    cfg = ModelConfig(**state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    export(model, cfg, args)


def cmd_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.loss_csv) as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [float(r["train_loss"]) for r in rows], label="train")
    ax.plot(steps, [float(r["val_loss"]) for r in rows], label="validation (last 2% of verses)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("tinyllm-kjv training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(f"wrote {args.png}")


def cmd_sample(args) -> None:
    ref = Reference(args.out_checkpoint, args.out_tokenizer)
    for temp in (0.0, 0.8):
        ids = ref.generate(args.prompt, args.n, temperature=temp, seed=args.seed)
        verses = [[]]
        for prev, t in zip(ids, ids[1:]):  # BOS starts the next verse: print it as a line break
            if t == 1:
                verses.append([])
            else:
                verses[-1].append(ref.decode_piece(prev, t))
        text = "\n".join(b"".join(v).decode("utf-8", errors="replace") for v in verses)
        print(f"[temperature {temp}]\n{text}\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--work", type=Path, default=Path("/work/scratch/tinyllm"), help="scratch directory")
    common.add_argument("--out-checkpoint", type=Path, default=BUNDLED_CHECKPOINT)
    common.add_argument("--out-tokenizer", type=Path, default=BUNDLED_TOKENIZER)
    common.add_argument("--loss-csv", type=Path, default=HERE / "loss.csv")
    common.add_argument("--threads", type=int, default=2)
    common.add_argument("--seed", type=int, default=1337)

    t = sub.add_parser("train", parents=[common], help="prepare the corpus, train, export")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--debs", type=Path, help="folder with bible-kjv_4.38_amd64.deb and bible-kjv-text_4.38_all.deb")
    src.add_argument("--kjv-txt", type=Path, help="the text printed by `bible -l0 Gen1:1-Rev22:21`")
    t.add_argument("--vocab-size", type=int, default=1024)
    t.add_argument("--dim", type=int, default=192)
    t.add_argument("--hidden-dim", type=int, default=0, help="default: 8/3*dim rounded to a multiple of 32")
    t.add_argument("--n-layers", type=int, default=6)
    t.add_argument("--n-heads", type=int, default=6)
    t.add_argument("--n-kv-heads", type=int, default=0, help="default: n_heads")
    t.add_argument("--seq-len", type=int, default=256)
    t.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--min-lr", type=float, default=1e-4)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--val-fraction", type=float, default=0.02)
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument("--eval-batches", type=int, default=8)
    t.add_argument("--log-every", type=int, default=10)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", parents=[common], help="export WORK/model.pt again")
    e.set_defaults(func=cmd_export)
    p = sub.add_parser("plot", parents=[common], help="loss.csv -> loss.png (needs matplotlib)")
    p.add_argument("--png", type=Path, default=HERE / "loss.png")
    p.set_defaults(func=cmd_plot)
    s = sub.add_parser("sample", parents=[common], help="greedy and T=0.8 samples from the bundled int8 model (numpy)")
    s.add_argument("--prompt", default="And the LORD said unto")
    s.add_argument("--n", type=int, default=60)
    s.set_defaults(func=cmd_sample)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
