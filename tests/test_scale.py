"""Models of any size and checkpoint (issue 13): NAME@REVISION reaches the hub loader, a local
.gguf file loads like the bundled models, --device-map goes to accelerate, and passes use SDPA
unless they read attention weights (results equal eager attention's)."""

from __future__ import annotations

import pytest
import torch

from massive_checks.base.constants import SMOLLM2
from massive_checks.base.errors import ModelUnavailable
from massive_checks.engine import gguf_cache, hooks, models, transfer
from massive_checks.engine.needs import Needs
from massive_checks.engine.session import ModelSession
from massive_checks.language.data import DataConfig

DATA = DataConfig(samples=4, seq_len=24)


def test_name_at_revision_is_split_and_malformed_ones_are_errors():
    assert models.split_revision("EleutherAI/pythia-160m@step1000") == ("EleutherAI/pythia-160m", "step1000")
    assert models.split_revision("gpt2") == ("gpt2", None)
    for bad in ("gpt2@", "@main"):
        with pytest.raises(ModelUnavailable, match="NAME@REVISION"):
            models.split_revision(bad)


def test_revision_and_device_map_reach_from_pretrained(monkeypatch):
    """Offline here: the loader is replaced, and what it is asked for is checked."""
    import transformers

    asked = {}

    def fake(kind):
        def from_pretrained(repo, **kwargs):
            asked[kind] = (repo, kwargs)
            raise OSError("stop here")

        return from_pretrained

    monkeypatch.setattr(models, "_in_hub_cache", lambda repo, revision=None: True)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake("tokenizer"))
    with pytest.raises(ModelUnavailable, match="stop here"):
        models.load("EleutherAI/pythia-160m@step1000")
    assert asked["tokenizer"] == ("EleutherAI/pythia-160m", {"revision": "step1000", "trust_remote_code": False})
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: object())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake("model"))
    with pytest.raises(ModelUnavailable, match="stop here"):
        models.load("org/big-model@v2", dtype="bfloat16", device_map="auto")
    repo, kwargs = asked["model"]
    assert repo == "org/big-model" and kwargs["revision"] == "v2"
    assert kwargs["device_map"] == "auto" and kwargs["dtype"] == torch.bfloat16


def test_a_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailable, match="no such .gguf file"):
        models.load(str(tmp_path / "absent.gguf"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(ModelUnavailable, match="could not be loaded from GGUF"):
        models.load(str(broken))


class _WordTokenizer:
    """A stand-in for a converted tokenizer: one id per word or per character, BOS optional."""

    def __init__(self, bos: int | None, per_char: bool = False, eos: int = 1):
        self.bos, self.per_char = bos, per_char
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos, eos, None

    def __call__(self, text: str):
        pieces = list(text.replace(" ", "")) if self.per_char else text.split()
        return type("Encoding", (), {"input_ids": [self.bos] * (self.bos is not None) + [7] * len(pieces)})()


def _facts(add_bos: bool, **ids) -> dict:
    return {"add_bos_token": add_bos, "special_ids": ids}


@pytest.mark.parametrize(
    "tokenizer, facts, problem",
    [
        (_WordTokenizer(bos=None), _facts(True, bos=2), "does not start a sequence with BOS"),
        (_WordTokenizer(bos=5), _facts(True, eos=1), "does not start a sequence with BOS \\(id None\\)"),
        (_WordTokenizer(bos=5), _facts(False, bos=2), "its BOS token is id 5, the GGUF's is 2"),
        (_WordTokenizer(bos=None, eos=1), _facts(False, eos=2), "its EOS token is id 1, the GGUF's is 2"),
        (_WordTokenizer(bos=2, per_char=True), _facts(True, bos=2), "common words into"),
        (_WordTokenizer(bos=None, per_char=True), _facts(False), "common words into"),
    ],
)
def test_a_wrongly_converted_gguf_tokenizer_is_refused(tokenizer, facts, problem, tmp_path):
    with pytest.raises(ModelUnavailable, match=f"model 'm': transformers .* {problem}.*Upgrade transformers.*delete"):
        gguf_cache._check_tokenizer("m", tokenizer, facts, tmp_path)


@pytest.mark.parametrize(
    "tokenizer, facts",
    [
        (_WordTokenizer(bos=2), _facts(True, bos=2, eos=1)),
        (_WordTokenizer(bos=None), _facts(False, eos=1, pad=0)),  # no pad token yet: load() sets one
    ],
)
def test_a_sound_gguf_tokenizer_passes(tokenizer, facts):
    gguf_cache._check_tokenizer("m", tokenizer, facts)  # raises if refused


@pytest.mark.slow
def test_the_bundled_gguf_facts_and_a_cache_without_them_is_rebuilt(smollm2, tmp_path, monkeypatch):
    import json

    from safetensors.torch import save_file

    from massive_checks.engine import cache_guard

    path, key = gguf_cache.BUNDLED_GGUF[SMOLLM2]()
    assert gguf_cache._gguf_tokenizer_facts(path) == _facts(False, bos=1, eos=2, unk=0, pad=2)
    monkeypatch.setenv("MASSIVE_CHECKS_CACHE", str(tmp_path))
    cache = gguf_cache.cache_dir(SMOLLM2, key)
    smollm2.tokenizer.save_pretrained(cache)
    save_file({"w": torch.zeros(4)}, cache / "model.safetensors")
    cache_guard.write_manifest(cache)
    assert "unreadable" in gguf_cache._cache_problem(cache)  # no facts: from before the check: rebuilt, never trusted
    (cache / gguf_cache.GGUF_FACTS).write_text(json.dumps({"add_bos_token": False}))
    cache_guard.write_manifest(cache)
    assert "out of date" in gguf_cache._cache_problem(cache)  # facts from before the special-token check
    (cache / gguf_cache.GGUF_FACTS).write_text(json.dumps(_facts(True, bos=1, eos=2)))
    cache_guard.write_manifest(cache)
    assert gguf_cache._cache_problem(cache) is None
    with pytest.raises(ModelUnavailable, match=f"BOS .*delete the cache {cache}"):
        models.load(SMOLLM2)  # a cached tokenizer is checked at every load, before the weights


def test_one_gguf_parse_shares_one_reader_per_file_and_restores_gguf(tmp_path, monkeypatch):
    import gguf

    built = []
    monkeypatch.setattr(gguf, "GGUFReader", lambda path, mode="r": built.append(path) or object())
    original = gguf.GGUFReader
    with pytest.raises(RuntimeError, match="inside"), gguf_cache._one_gguf_parse():
        first, again = gguf.GGUFReader(tmp_path / "a.gguf"), gguf.GGUFReader(str(tmp_path / "a.gguf"))
        other = gguf.GGUFReader(tmp_path / "b.gguf")
        assert first is again and first is not other
        raise RuntimeError("inside")
    assert gguf.GGUFReader is original and len(built) == 2  # restored on the error


@pytest.mark.slow
def test_a_local_gguf_file_loads_like_the_bundled_model(smollm2, tmp_path, monkeypatch):
    import gguf

    monkeypatch.setenv("MASSIVE_CHECKS_CACHE", str(tmp_path))  # its own dequantized cache
    path, key = gguf_cache.BUNDLED_GGUF[SMOLLM2]()
    parses = []
    reader = gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda *args, **kwargs: parses.append(args) or reader(*args, **kwargs))
    local = models.load(str(path))
    assert len(parses) == 1  # the tokenizer check, the tokenizer, the config and the weights share one parse
    assert local.revision == smollm2.revision == f"gguf-{key}"
    ids = torch.tensor([[1, 520, 4325, 314, 253]])
    with torch.no_grad():
        assert torch.equal(local.model(input_ids=ids).logits, smollm2.model(input_ids=ids).logits)


def test_runs_inside_pytester_share_the_model_cache(pytester):
    """pytester moves HOME into its folder; a cache there would dequantize Gemma 3 again (1.3 GB),
    which filled CI's disk once."""
    assert pytester.path not in gguf_cache.cache_root().parents


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_passes_use_sdpa_unless_they_read_attention_weights(session_for, load_model, name):
    lm = load_model(name)
    seen = []
    block, _ = hooks.resolve(lm, "blocks.0.out")
    handle = block.register_forward_hook(lambda *a: seen.append(lm.model.config._attn_implementation))
    try:
        sdpa = session_for(name).run(DATA)
        probs = {hooks.site(L, "attn.probs") for L in range(lm.n_layers)}
        eager = session_for(name).run(DATA, needs=Needs(sites=probs))
    finally:
        handle.remove()
    assert set(seen) == {"sdpa", "eager"} and seen[0] == "sdpa" and seen[-1] == "eager"
    assert lm.model.config._attn_implementation == "eager"  # restored after the pass
    for L in range(lm.n_layers):
        a, b = sdpa.stats[hooks.site(L, "out")], eager.stats[hooks.site(L, "out")]
        assert torch.allclose(a.top()[0], b.top()[0], rtol=1e-5)
        assert torch.allclose(a.median(), b.median(), rtol=1e-5)


def test_automatic_batch_size_fits_half_the_free_memory():
    from massive_checks.engine.session import MAX_ROWS, rows_per_chunk

    row = 100 * 2**20  # 100 MiB per sequence
    assert rows_per_chunk(row, 2 * 350 * 2**20, "cuda:0") == 3  # 350 MiB usable: 3 whole rows
    assert rows_per_chunk(row, 10 * 2**20, "cuda:0") == 1  # never below one row
    assert rows_per_chunk(row, 2**40, "cuda:0") == MAX_ROWS["cuda"]
    assert rows_per_chunk(row, 2**40, "cpu") == MAX_ROWS["cpu"]
    assert rows_per_chunk(row, None, "cpu") == MAX_ROWS["cpu"]  # free memory unknown


def test_activation_estimate_grows_with_logits_and_quadratically_with_attention_weights(load_model):
    lm = load_model("tiny-llama")
    plain = lm.activation_bytes(64, logits=False, attention_weights=False)
    assert lm.activation_bytes(64, logits=True, attention_weights=False) > plain
    assert lm.activation_bytes(128, logits=False, attention_weights=False) == 2 * plain
    weights = lm.activation_bytes(128, False, True) - lm.activation_bytes(128, False, False)
    assert weights == 4 * (lm.activation_bytes(64, False, True) - plain)  # T x T per head


def test_automatic_batch_size_chunks_by_free_memory_with_the_same_results(session_for, monkeypatch):
    """Little free memory: one sequence per chunk; the statistics equal those of one chunk."""
    auto = session_for("tiny-llama")  # batch_size None: chosen per pass
    monkeypatch.setattr(type(auto.lm), "free_memory", lambda self: 3 * self.activation_bytes(24, False, False))
    assert auto.chunk_rows(24, False, False) == 1
    assert session_for("tiny-llama").chunk_rows(24, True, False) == 1  # logits make a row larger
    fixed = session_for("tiny-llama", batch_size=4)
    assert fixed.chunk_rows(24, True, True) == 4  # a set batch size is kept
    a, b = auto.run(DATA), fixed.run(DATA)
    for layer in range(auto.lm.n_layers):
        name = hooks.site(layer, "out")
        torch.testing.assert_close(a.stats[name].cell_max, b.stats[name].cell_max, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.stats[name].median(), b.stats[name].median(), rtol=1e-5, atol=1e-6)


def test_scale_options_take_their_values_and_name_bad_ones(pytester):
    pytester.mkdir("specs")
    (pytester.path / "specs" / "s.yaml").write_text(
        "id: s\nclaim: c\ndata: {samples: 2, seq_len: 12}\nchecks:\n  - {measure: top1, layers: 0, at_least: 1.0e-6}\n"
    )
    assert pytester.runpytest("specs", "--model", "tiny-llama", "--batch-size", "auto").ret == 0
    assert pytester.runpytest("specs", "--model", "tiny-llama", "--batch-size", "1").ret == 0
    result = pytester.runpytest("specs", "--model", "tiny-llama", "--batch-size", "0")
    assert result.ret == 4  # usage error
    result.stderr.fnmatch_lines(["*argument --batch-size: '0': write a positive number or auto*"])
    result = pytester.runpytest("specs", "--model", "tiny-llama", "--figure-workers", "two")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*argument --figure-workers: 'two': write a number (0: draw in this process) or auto*"])
    result = pytester.runpytest("specs", "--model", "tiny-llama", "--device-map", "cuda:1")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*argument --device-map: invalid choice: *cuda:1* (choose from *auto*, *balanced*"])
    assert pytester.runpytest("specs", "--model", "tiny-llama", "--device-map", "auto").ret == 0


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_a_model_spread_by_accelerate_gives_the_same_statistics(name, tmp_path):
    """--device-map on a model loaded on the cpu (GGUF, synthetic) goes through accelerate's
    dispatch, as from_pretrained does for hub models. This machine has no second GPU, so block 1 and
    the embedding are offloaded to disk: accelerate's own hooks then move their weights in at every
    call, beside ours, and outside a call they are meta tensors. Every statistic equals the plain
    model's, at the offloaded block too, also under a bias-mode ablation of the offloaded block
    (its output projection's bias) and for neuron contributions (its down projection's weight)."""
    from massive_checks.language.interventions import Ablation

    plain, spread = models.load(name), models.load(name)
    offloaded = (f"{plain.adapter.blocks}.1.", plain.model.get_input_embeddings())
    layout = {
        path: "disk" if path.startswith(offloaded[0]) or module is offloaded[1] else "cpu"
        for path, module in spread.model.named_modules()
        if list(module.parameters(recurse=False))
    }
    spread.model = models.dispatch(spread.model, layout, torch.float32, offload_dir=str(tmp_path))
    spread.device = models.input_device(spread.model)  # the embedding's weight is on the meta device
    down = hooks.resolve(spread, "blocks.1.mlp.out")[0]
    assert spread.device == "cpu" and next(down.parameters()).device.type == "meta"  # really offloaded
    assert torch.equal(models.parameter(down, "weight"), hooks.resolve(plain, "blocks.1.mlp.out")[0].weight)
    sites = {hooks.site(L, site) for L in range(plain.n_layers) for site in ("out", "attn.o_in", "mlp.down_in", "attn.probs")}
    needs = Needs(sites=sites, medians={hooks.site(L, "out") for L in range(plain.n_layers)})
    for intervention in ((), (Ablation("attn", 1, mode="bias"),)):
        want, got = (ModelSession(lm).run(DATA, intervention, needs).stats for lm in (plain, spread))
        for site in sorted(sites):
            a, b = want[site], got[site]
            if site.endswith("probs"):
                assert torch.equal(a.attention_to_keys(), b.attention_to_keys()), site
                continue
            assert all(torch.equal(x, y) for x, y in zip(a.cells(), b.cells())), site
            assert torch.equal(a.dim_max(), b.dim_max()) and torch.equal(a.mean(), b.mean()), site
        assert torch.equal(want["blocks.1.out"].median(), got["blocks.1.out"].median())
    assert hooks.hook_count(spread.model) == 0


def test_device_map_places_cpu_loaded_models_in_the_asked_dtype():
    lm = models.load("tiny-llama", dtype="bfloat16", device_map="auto")
    assert lm.model.hf_device_map and lm.device == "cpu"  # this machine has no GPU: all on the cpu
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16} and lm.dtype == torch.bfloat16
    with pytest.raises(ModelUnavailable, match=r"--device-map 'cuda:1' is not one of auto, balanced.*--device"):
        models.load("tiny-llama", device_map="cuda:1")


def test_host_copies_are_packed_per_device():
    """A model spread over GPUs keeps each block's statistics on its own GPU: one packed copy
    never joins tensors of two devices (meta tensors stand in for a second device here)."""

    tensors = [torch.zeros(3), torch.zeros(3, device="meta"), torch.zeros(2), torch.zeros(2, device="meta")]
    assert transfer._pack_groups(tensors) == [[0, 2], [1, 3]]
