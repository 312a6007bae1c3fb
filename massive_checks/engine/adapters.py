"""One adapter per architecture: the module paths of its blocks, attention, output projection,
MLP projections and activation, and post-norms, so hooks and edits address canonical sites."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from massive_checks.base.errors import UnsupportedArchitecture


@dataclass(frozen=True)
class Adapter:
    """Where the parts of one architecture live, relative to the model root.

    Paths are dotted module paths; `{L}` is replaced by the block index. `gate` is None for
    ungated MLPs. `conv1d` marks GPT-2's Conv1D, whose weight is [in, out] instead of [out, in].
    """

    family: str
    blocks: str  # the ModuleList of decoder blocks
    attn: str  # attention module; returns (output, weights)
    o_proj: str  # attention output projection; its *input* holds the heads side by side
    up: str  # MLP up / fc projection; its input is the MLP input
    gate: str | None
    act: str  # activation function module
    down: str  # MLP down projection; its output is the MLP output
    conv1d: bool = False
    q: str = ""  # query projection (for fused q/k/v: the fused one); its input is the attention input
    k: str = ""
    v: str = ""
    # How q, k and v sit in a fused projection's output: "separate" (their own modules), "stacked"
    # ([q | k | v], GPT-2's c_attn) or "interleaved" (per head [q_h | k_h | v_h], GPT-NeoX).
    qkv: str = "separate"
    norm_attn: str = ""  # the norm before attention
    norm_mlp: str = ""  # the norm before the MLP
    norm_attn_post: str | None = None  # Gemma 2/3: the norm of the attention output
    norm_mlp_post: str | None = None  # Gemma 2/3: the norm of the MLP output
    # What is added to the residual stream, where it is not the attention / MLP output itself:
    # Gemma 2/3 normalise both (post_attention_layernorm, post_feedforward_layernorm) before the add.
    attn_resid: str | None = None
    mlp_resid: str | None = None


_LLAMA_LIKE: dict[str, Any] = dict(
    blocks="model.layers",
    attn="model.layers.{L}.self_attn",
    q="model.layers.{L}.self_attn.q_proj",
    k="model.layers.{L}.self_attn.k_proj",
    v="model.layers.{L}.self_attn.v_proj",
    o_proj="model.layers.{L}.self_attn.o_proj",
    up="model.layers.{L}.mlp.up_proj",
    gate="model.layers.{L}.mlp.gate_proj",
    act="model.layers.{L}.mlp.act_fn",
    down="model.layers.{L}.mlp.down_proj",
)
_LLAMA_NORMS: dict[str, Any] = dict(
    norm_attn="model.layers.{L}.input_layernorm", norm_mlp="model.layers.{L}.post_attention_layernorm"
)


# Gemma 2/3 norm both sublayers' outputs too; their pre-MLP norm is pre_feedforward_layernorm.
_POST_NORMS: dict[str, Any] = dict(
    attn_resid="model.layers.{L}.post_attention_layernorm",
    mlp_resid="model.layers.{L}.post_feedforward_layernorm",
    norm_attn="model.layers.{L}.input_layernorm",
    norm_mlp="model.layers.{L}.pre_feedforward_layernorm",
    norm_attn_post="model.layers.{L}.post_attention_layernorm",
    norm_mlp_post="model.layers.{L}.post_feedforward_layernorm",
)


ADAPTERS: dict[str, Adapter] = {
    "gpt2": Adapter(
        "gpt2",
        blocks="transformer.h",
        attn="transformer.h.{L}.attn",
        q="transformer.h.{L}.attn.c_attn",
        k="transformer.h.{L}.attn.c_attn",
        v="transformer.h.{L}.attn.c_attn",
        qkv="stacked",
        norm_attn="transformer.h.{L}.ln_1",
        norm_mlp="transformer.h.{L}.ln_2",
        o_proj="transformer.h.{L}.attn.c_proj",
        up="transformer.h.{L}.mlp.c_fc",
        gate=None,
        act="transformer.h.{L}.mlp.act",
        down="transformer.h.{L}.mlp.c_proj",
        conv1d=True,
    ),
    "gpt_neox": Adapter(
        "gpt_neox",
        blocks="gpt_neox.layers",
        attn="gpt_neox.layers.{L}.attention",
        q="gpt_neox.layers.{L}.attention.query_key_value",
        k="gpt_neox.layers.{L}.attention.query_key_value",
        v="gpt_neox.layers.{L}.attention.query_key_value",
        qkv="interleaved",
        norm_attn="gpt_neox.layers.{L}.input_layernorm",
        norm_mlp="gpt_neox.layers.{L}.post_attention_layernorm",
        o_proj="gpt_neox.layers.{L}.attention.dense",
        up="gpt_neox.layers.{L}.mlp.dense_h_to_4h",
        gate=None,
        act="gpt_neox.layers.{L}.mlp.act",
        down="gpt_neox.layers.{L}.mlp.dense_4h_to_h",
    ),
    "opt": Adapter(
        "opt",
        blocks="model.decoder.layers",
        attn="model.decoder.layers.{L}.self_attn",
        q="model.decoder.layers.{L}.self_attn.q_proj",
        k="model.decoder.layers.{L}.self_attn.k_proj",
        v="model.decoder.layers.{L}.self_attn.v_proj",
        norm_attn="model.decoder.layers.{L}.self_attn_layer_norm",
        norm_mlp="model.decoder.layers.{L}.final_layer_norm",
        o_proj="model.decoder.layers.{L}.self_attn.out_proj",
        up="model.decoder.layers.{L}.fc1",
        gate=None,
        act="model.decoder.layers.{L}.activation_fn",
        down="model.decoder.layers.{L}.fc2",
    ),
    **{name: Adapter(name, **_LLAMA_LIKE, **_LLAMA_NORMS) for name in ("llama", "mistral", "qwen2", "qwen3", "gemma")},
    **{name: Adapter(name, **_LLAMA_LIKE, **_POST_NORMS) for name in ("gemma2", "gemma3_text")},
    # Gemma 3 4B+ are image-text models: the decoder sits under model.language_model.
    "gemma3": Adapter(
        "gemma3",
        **{k: v.replace("model.layers", "model.language_model.layers") for k, v in {**_LLAMA_LIKE, **_POST_NORMS}.items()},
    ),
}


def adapter_for(model) -> Adapter:
    model_type = model.config.model_type
    if model_type not in ADAPTERS:
        raise UnsupportedArchitecture(f"architecture {model_type!r} is not supported; supported: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[model_type]
