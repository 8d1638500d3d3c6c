"""Tokens per second of the bundled language model, every way it can run.

    python -m querymt_jupyter.bench.tinyllm [--tokens 128] [--repeat 10] [--checkpoint FILE]

One table: the native build with 1 and 2 threads, the Wasm build with relaxed SIMD (as bundled), with plain
SIMD (``-msimd128``) and without, each on the same weights in int8 and in fp32 (both written to a temporary
folder from the bundled model, or from ``--checkpoint``, any llama2.c checkpoint with its tokenizer.bin
beside it), plus the ratios. Each cell is ``bench.run`` of ``complete`` generating
``--tokens`` tokens (stop_at_eos off) greedily, so the method is the benchmark's (warm-up, interleaved
rounds, tokens over the mean call time) and the figure is the forward pass's: a sampler sorts the likely
tokens, whose number depends on the weights (a random model's flat distribution makes it sort them all).

Where the Wasm build's time goes (perf with Extism's JIT dump, on the plugin built without ``-s``)::

    EXTISM_PROFILE=jitdump perf record -k 1 python SCRIPT   # a script that calls the Wasm provider
    perf inject --jit -i perf.data -o jit.data && perf report -i jit.data --sort sym

What the profile showed, and what the Wasm build does about it: Wasmtime checks its epoch counter at every
loop head (Extism uses it for timeouts), and the check can call out, so a loop's vectors were stored and
reloaded around it on every iteration; row by row, each row's float accumulator went through memory.
So in Wasm the int8 product goes group by group over weights reordered group-major at load, four rows per
iteration, with relaxed SIMD's 8-bit by 7-bit dot product (Wasmtime: vpmaddubsw). The native build keeps
rows in order, two at a time with AVX2, which measured faster there. Both compute the same bits. There is
one export call per generation, so host crossings do not count.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

from ..build import BUNDLED_FLAGS, PLUGINS_DIR, build_plugin
from ..registry import PluginRegistry
from ..tinyllm import BUNDLED_CHECKPOINT, BUNDLED_TOKENIZER
from ..tinyllm import checkpoint as ckpt
from . import run

__all__ = ["VARIANTS", "measure"]

# name -> (plugin kind, extra compiler flags, native threads)
VARIANTS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "native, 1 thread": ("native", BUNDLED_FLAGS["tinyllm"]["native"], 1),
    "native, 2 threads": ("native", BUNDLED_FLAGS["tinyllm"]["native"], 2),
    "wasm, relaxed simd": ("wasm", BUNDLED_FLAGS["tinyllm"]["wasm"], 1),
    "wasm, simd128": ("wasm", ("-O3", "-msimd128"), 1),
    "wasm, scalar": ("wasm", ("-O3",), 1),
}


def _config(folder: Path) -> Path:
    """A plugins.toml with one provider per variant and weights format."""
    source = PLUGINS_DIR / "tinyllm.c"
    entries = []
    for variant, (kind, flags, threads) in VARIANTS.items():
        plugin = build_plugin(source, kind, flags=flags)
        for fmt in ("int8", "fp32"):
            entries.append(
                f'[[providers]]\nname = "{variant} | {fmt}"\npath = "{plugin}"\nallowed_paths = ["{folder}"]\n'
                f'[providers.config]\ncheckpoint = "{folder}/{fmt}.bin"\nthreads = {threads}\ntemperature = 0\n'
            )
    path = folder / "plugins.toml"
    path.write_text("".join(entries))
    return path


def measure(
    tokens: int = 128, repeat: int = 10, progress: bool = True, checkpoint: Path = BUNDLED_CHECKPOINT
) -> pd.DataFrame:
    """tokens/s per variant (rows) and weights format (columns), with each one's ratio to native."""
    checkpoint = Path(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer = BUNDLED_TOKENIZER if checkpoint == BUNDLED_CHECKPOINT else checkpoint.parent / "tokenizer.bin"
        (folder / "tokenizer.bin").write_bytes(tokenizer.read_bytes())
        cfg, weights, _ = ckpt.read_checkpoint(checkpoint)
        ckpt.write_legacy_fp32(folder / "fp32.bin", cfg, weights)
        ckpt.write_int8(folder / "int8.bin", cfg, weights)
        with PluginRegistry.from_path(_config(folder)) as registry:
            names = [spec.name for spec in registry.config.providers]
            result = run(names, ops=("complete",), tokens=tokens, repeat=repeat, registry=registry, progress=progress)
    rate = result.tokens_per_second.set_index("provider")["tokens/s"]
    table = pd.DataFrame(
        {fmt: [rate[f"{variant} | {fmt}"] for variant in VARIANTS] for fmt in ("int8", "fp32")}, index=list(VARIANTS)
    )
    table.index.name = f"tokens/s ({tokens} tokens per call, {repeat} calls)"
    for fmt in ("int8", "fp32"):
        table[f"{fmt}: native(1 thread) ÷ this"] = table[fmt].iloc[0] / table[fmt]
    return table.round(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per call")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per variant")
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_CHECKPOINT, help="a llama2.c checkpoint")
    args = parser.parse_args()
    table = measure(args.tokens, args.repeat, progress=sys.stderr.isatty(), checkpoint=args.checkpoint)
    print(table.to_string())


if __name__ == "__main__":
    main()
