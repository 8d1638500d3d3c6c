"""tinyllm: the Python side of the built-in small language model.

The inference engine is a C plugin; this subpackage holds what it is checked against and
how its model is made: the checkpoint and tokenizer file formats (:mod:`.checkpoint`), a
numpy reference forward pass (:mod:`.reference`), a BPE tokenizer trainer
(:mod:`.tokenizer_train`) and the PyTorch training script (:mod:`.train`, a developer tool:
only it needs torch). The bundled model, trained on the King James Bible, lives in
``querymt_jupyter/models`` (see ``TRAINING.md`` here).
"""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED_CHECKPOINT = MODELS_DIR / "tinyllm-kjv.bin"
BUNDLED_TOKENIZER = MODELS_DIR / "tokenizer.bin"
