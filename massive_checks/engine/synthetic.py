"""Synthetic models for tests: tiny random transformers of each supported architecture, and a
tiny Llama with a massive activation planted at a known layer, dim and token (exact ground truth).

They need no network: the tokenizer is byte-level and built in memory."""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 260  # 256 bytes + <s> (256), </s> (257), <pad> (258), spare
BOS, EOS, PAD = 256, 257, 258
TINY = dict(layers=3, width=64, heads=4, ffn=128)


def byte_tokenizer(add_bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    vocab.update({"<s>": BOS, "</s>": EOS, "<pad>": PAD})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    if add_bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _configs():
    import transformers as T

    L, D, H, F = TINY["layers"], TINY["width"], TINY["heads"], TINY["ffn"]
    common: dict[str, Any] = dict(vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    shape: dict[str, Any] = dict(num_hidden_layers=L, hidden_size=D, num_attention_heads=H, max_position_embeddings=512, **common)
    llama_like: dict[str, Any] = dict(num_key_value_heads=2, intermediate_size=F, **shape)
    return {
        "tiny-gpt2": (T.GPT2Config(n_layer=L, n_embd=D, n_head=H, n_inner=F, n_positions=512, **common), False),
        "tiny-llama": (T.LlamaConfig(**llama_like), True),
        "tiny-mistral": (T.MistralConfig(**llama_like), True),
        "tiny-qwen2": (T.Qwen2Config(**llama_like), True),
        "tiny-gemma": (T.GemmaConfig(head_dim=D // H, **llama_like), True),
        "tiny-gemma2": (T.Gemma2Config(head_dim=D // H, **llama_like), True),
        "tiny-gemma3": (T.Gemma3TextConfig(head_dim=D // H, **llama_like), True),
        "tiny-neox": (T.GPTNeoXConfig(intermediate_size=F, **shape), True),
        "tiny-opt": (T.OPTConfig(ffn_dim=F, word_embed_proj_dim=D, **shape), True),
        "tiny-gemma3-mm": (
            T.Gemma3Config(
                text_config=T.Gemma3TextConfig(head_dim=D // H, **llama_like).to_dict(),
                mm_tokens_per_image=4,
                vision_config=T.SiglipVisionConfig(
                    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
                ).to_dict(),
            ),
            True,
        ),
        "planted-llama": (T.LlamaConfig(**{**llama_like, "num_hidden_layers": 4}), True),
    }


BUILDERS = (
    "tiny-gpt2",
    "tiny-llama",
    "tiny-mistral",
    "tiny-qwen2",
    "tiny-gemma",
    "tiny-gemma2",
    "tiny-gemma3",
    "tiny-gemma3-mm",
    "tiny-neox",
    "tiny-opt",
    "planted-llama",
)

# Ground truth of planted-llama: block `layer`'s MLP writes ~1e3 into residual `dim` at the
# first token (<s>, position 0). `trigger` is a residual dim that only <s> carries.
PLANT = dict(layer=1, dim=37, token=0, trigger=5, neuron=11)
# A sink head: head `head` of block `layer` puts ~all its attention on <s>. Its query reads dim
# `constant` (0.5 on every token), its key the trigger (only <s>), in the last rotary pair (the
# slowest rotation: the score barely depends on distance).
SINK = dict(layer=1, head=0, constant=6)


# Checkpoints of the synthetic models, as `NAME@REVISION` names them (a test's two training steps):
# `init` is the random initialisation (planted-llama without its plant), `main` the default.
REVISIONS = ("main", "init")


def build(name: str, seed: int = 0, revision: str = "main"):
    from transformers import AutoModelForCausalLM

    if revision not in REVISIONS:
        raise ValueError(f"{name} has revisions {', '.join(REVISIONS)}, not {revision!r}")
    config, add_bos = _configs()[name]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    if name.startswith("planted") and revision == "main":
        plant_massive_activation(model, **PLANT)
        plant_sink_head(model, trigger=PLANT["trigger"], **SINK)
    return model.eval(), byte_tokenizer(add_bos)


@torch.no_grad()
def plant_sink_head(model, layer: int, head: int, constant: int, trigger: int) -> None:
    """Wire one attention head of `layer` to attend to <s> (position 0) from every query."""
    embed = model.model.embed_tokens.weight  # [V, D]
    embed[:, constant] = 0.5  # small: <s>'s norm, and so its planted value, barely changes
    for block in model.model.layers:  # nothing else may write the constant dim
        block.self_attn.o_proj.weight[constant, :] = 0.0
        block.mlp.down_proj.weight[constant, :] = 0.0
    attention = model.model.layers[layer].self_attn
    hd = attention.head_dim
    group = model.config.num_attention_heads // model.config.num_key_value_heads
    slow = hd // 2 - 1  # the last rotary pair rotates slowest: (slow, slow + hd/2)
    q, k = attention.q_proj.weight, attention.k_proj.weight  # [out, in]
    kv = head // group
    for h in range(kv * group, (kv + 1) * group):  # the query heads sharing its key: only `head` reads it
        q[h * hd + slow, :] = 0.0
        q[h * hd + slow + hd // 2, :] = 0.0
    k[kv * hd + slow, :] = 0.0
    k[kv * hd + slow + hd // 2, :] = 0.0
    q[head * hd + slow, constant] = 16.0  # q . k ~ 8 x 8 x 8 / sqrt(hd) on <s>, ~0 elsewhere
    k[kv * hd + slow, trigger] = 8.0


@torch.no_grad()
def plant_massive_activation(model, layer: int, dim: int, token: int, trigger: int, neuron: int) -> None:
    """Wire one MLP neuron of `layer` so that it fires only on <s> and writes into `dim`."""
    assert token == 0, "the plant keys on <s>, which the tokenizer puts at position 0"
    embed = model.model.embed_tokens.weight  # [V, D]
    embed[:, trigger] = 0.0
    embed[BOS, trigger] = 1.0  # after RMSNorm, <s>'s trigger component is ~sqrt(D) = 8
    for block in model.model.layers:  # nothing else may write the trigger dim
        block.self_attn.o_proj.weight[trigger, :] = 0.0  # Linear weight: [out, in]
        block.mlp.down_proj.weight[trigger, :] = 0.0
    mlp = model.model.layers[layer].mlp
    for proj in (mlp.gate_proj, mlp.up_proj):
        proj.weight[neuron, :] = 0.0
        proj.weight[neuron, trigger] = 4.0  # silu(32) * 32 ~ 1e3 on <s>, exactly 0 elsewhere
    mlp.down_proj.weight[:, neuron] = 0.0
    mlp.down_proj.weight[dim, neuron] = 1.0
