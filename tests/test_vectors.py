"""Steering vectors (issue 9): a planted direction is recovered; cleaning, norms, norm share and
calibration equal hand computations; pooled captures equal a plain forward with the same window;
bad contrast files and vector specs fail with file, line and key."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import reference_block_outputs
from massive_checks import cli
from massive_checks.base.errors import DataError, SpecError
from massive_checks.engine.synthetic import PLANT
from massive_checks.language import contrast, load_file, vector_defs
from massive_checks.language.data import DataConfig, read_passages
from massive_checks.language.definitions import Window
from massive_checks.language.vector_defs import Cleaning, VectorDef
from massive_checks.measures.steering import vector_of
from massive_checks.pipeline.evaluate import Evaluator
from massive_checks.steering import vectors


def _unit(generator, width: int) -> torch.Tensor:
    u = torch.randn(width, generator=generator)
    return u / u.norm()


# ---------------------------------------------------------------- pure vector math


def test_each_method_recovers_a_planted_direction_and_not_a_random_one():
    g = torch.Generator().manual_seed(0)
    u, other = _unit(g, 48), _unit(g, 48)
    noise = 0.3 * torch.randn(200, 48, generator=g)
    sign = torch.cat([torch.ones(100), -torch.ones(100)])
    x = noise + 2.0 * sign[:, None] * u  # pos = +2u, neg = -2u, plus isotropic noise
    y = (sign > 0).long()
    found = {
        "mean_diff": vectors.mean_diff(x[:100], x[100:]),
        "probe": vectors.probe(x, y)[0],
        "pca": vectors.pca(x[:100], x[100:]),
    }
    for method, v in found.items():
        assert vectors.cosine(v, u) > 0.99, method
        assert abs(vectors.cosine(v, other)) < 0.5, method  # the check can fail: a wrong direction scores low


def test_probe_is_scikit_learns_l2_logistic_regression_on_the_raw_activations():
    """The same objective as scikit-learn's (C = 1, intercept not penalised): on a well-conditioned
    problem, where lbfgs does converge, both land on the same optimum."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    x = 30.0 * torch.randn(80, 10, generator=g)  # activations far from unit scale
    y = (x[:, 0] + 15 * torch.randn(80, generator=g) > 0).long()
    w, b = vectors.probe(x, y)
    raw = LogisticRegression(C=1.0, max_iter=100_000, tol=1e-12).fit(x.double().numpy(), y.numpy())
    assert torch.allclose(w.double(), torch.tensor(raw.coef_[0]), rtol=1e-5, atol=1e-8)
    assert b == pytest.approx(float(raw.intercept_[0]), rel=1e-5, abs=1e-7)
    assert vectors.accuracy(x, y, w, -b) == pytest.approx(raw.score(x.double().numpy(), y.numpy()))


def _massive_contrast(generator, scale: float = 1e5):
    """160 examples of 64 dims; dim 5 is massive (~scale, varying by 1%) in every example, as on
    Gemma 3 270M's block 8: the Hessian's condition number is ~scale^2."""
    x = torch.randn(160, 64, generator=generator)
    x[:, 5] = scale * (1 + 0.01 * torch.randn(160, generator=generator))
    y = (x[:, 0] + x[:, 1] + 0.5 * torch.randn(160, generator=generator) > 0).long()
    return x, y


def _separable_contrast(generator):
    """40 examples of 300 dims with random labels: separable, so only the regulariser bounds w, and
    the objective at the optimum is ~0.02 (~300 on the massive-dim problem)."""
    return 20 * torch.randn(40, 300, generator=generator), (torch.rand(40, generator=generator) > 0.5).long()


@pytest.mark.parametrize("problem", [_massive_contrast, _separable_contrast], ids=["massive-dim", "separable"])
def test_probe_is_the_exact_optimum(problem):
    """The objective's gradient at the returned probe is zero to float64 precision, so the probe's
    numbers (its energy in the massive dim, cosines) are the model's, not a solver's stopping
    point. The old lbfgs fit (tol 1e-8) left a gradient of 0.15 on the massive-dim problem (this
    test asks < 1e-6), and 1e-6 input noise moved its energy share in dim 5 by 8% (this test asks
    < 0.1%)."""
    x, y = problem(torch.Generator().manual_seed(2))
    theta = vectors.logistic_optimum(x, y).requires_grad_()  # [D+1] float64: weight, intercept
    features = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    margins = (y.double() * 2 - 1) * (features @ theta)
    loss = 0.5 * (theta[:-1] ** 2).sum() + vectors.PROBE_C * torch.nn.functional.softplus(-margins).sum()
    (gradient,) = torch.autograd.grad(loss, theta)
    assert float(gradient.abs().max()) < 1e-6
    w, b = vectors.probe(x, y)
    assert torch.equal(w, theta[:-1].detach().float()) and b == float(theta[-1].detach())

    noisy = x * (1 + 1e-6 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3)))
    w_noisy, _ = vectors.probe(noisy, y)
    assert vectors.energy_share(w_noisy, [5]) == pytest.approx(
        vectors.energy_share(w, [5]), rel=1e-3
    )  # dim 5: massive in one problem
    assert vectors.cosine(w_noisy, w) > 1 - 1e-9


def test_probe_on_non_finite_activations_is_a_clear_error():
    x, y = _massive_contrast(torch.Generator().manual_seed(4))
    x[3, 7] = float("nan")
    with pytest.raises(ArithmeticError, match="did not converge in 100 Newton steps"):
        vectors.probe(x, y)


def test_cleaning_zeroes_exactly_the_named_dims_and_leaves_a_unit_vector():
    v = torch.arange(1.0, 11.0)
    out = vectors.clean(v, [2, 7])
    assert out[2] == 0 and out[7] == 0
    assert torch.isclose(out.norm(), torch.tensor(1.0))
    keep = [d for d in range(10) if d not in (2, 7)]
    assert torch.allclose(out[keep] * v[keep].norm(), v[keep])  # the rest only rescaled
    with pytest.raises(ValueError, match="leaves nothing"):
        vectors.clean(torch.tensor([0.0, 3.0]), [1])


def test_energy_share_dominant_dims_and_norms_by_hand():
    v = torch.tensor([3.0, 0.0, 4.0, 0.0])
    assert vectors.energy_share(v, [2]) == pytest.approx(16 / 25)
    assert vectors.energy_share(v, []) == 0.0
    assert vectors.dominant_dims(v, 2) == (2, 0)
    acts = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert float(vectors.norms(acts).mean()) == pytest.approx((5 + 2) / 2)
    assert float(vectors.norms(acts, [1]).mean()) == pytest.approx((3 + 0) / 2)
    assert vectors.energy_of_dims(acts, [1]) == pytest.approx((16 + 4) / (25 + 4))


# ---------------------------------------------------------------- windows and pooled captures


def test_windows_by_hand():
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    start = torch.tensor([3, 1])
    assert Window.parse("last:2").mask(mask, start).int().tolist() == [[0, 0, 0, 1, 1, 0], [0, 1, 1, 0, 0, 0]]
    assert Window.parse("first:2").mask(mask, start).int().tolist() == [[0, 0, 0, 1, 1, 0], [0, 1, 1, 0, 0, 0]]
    assert Window.parse("all").mask(mask, start).int().tolist() == [[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]]
    assert Window.parse("last:9").mask(mask, start)[:, 0].sum() == 0  # position 0 never
    for bad in ("last:0", "first", "all:3", "last:-1", "middle:2"):
        with pytest.raises(ValueError, match="last:K, first:K"):
            Window.parse(bad)


def _prompted(tmp_path, n: int = 12):
    """A contrast file with prompts of varied length (the byte tokenizer: one token per byte)."""
    rows = []
    for i in range(n):
        prompt = "Q" * (3 + i % 4) + ":"
        response = " " + "abcdefgh"[: 4 + i % 5]
        rows.append({"text": prompt + response, "prompt": prompt, "response": response, "label": "pos" if i % 2 else "neg"})
    path = tmp_path / "prompted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])  # with and without a start token
@pytest.mark.parametrize("window", ["last:3", "first:2", "all"])
def test_pooled_captures_equal_a_plain_forward_with_the_same_window(session_for, tmp_path, name, window):
    path, rows = _prompted(tmp_path)
    session = session_for(name, batch_size=5)  # chunks: the response starts follow each chunk's rows
    pooled = session.view(DataConfig()).contrast(str(path)).pooled(window)  # [S, L, D]
    lm, bos = session.lm, int(name != "tiny-gpt2")
    for i, row in enumerate(rows):
        ids = torch.tensor([lm.tokenizer(row["text"])["input_ids"]])
        blocks = reference_block_outputs(lm, ids, torch.ones_like(ids))
        length, first = ids.shape[1], bos + len(row["prompt"])  # one token per byte
        kind, _, k = window.partition(":")
        chosen = {
            "all": range(1, length),
            "last": range(length - int(k or 0), length),
            "first": range(first, first + int(k or 0)),
        }[kind]
        for layer, block in enumerate(blocks):
            expected = block[0, list(chosen)].mean(dim=0)
            assert torch.allclose(pooled[i, layer], expected, atol=1e-5), (i, layer)


# ---------------------------------------------------------------- a direction planted in a model


def _marker_set(tmp_path, n: int = 60):
    g = torch.Generator().manual_seed(3)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows = []
    for _ in range(n):
        stem = "".join(letters[int(j)] for j in torch.randint(0, 26, (12,), generator=g))
        rows += [{"text": stem + "PPPP", "label": "pos"}, {"text": stem + "NNNN", "label": "neg"}]
    path = tmp_path / "markers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mean_diff_and_probe_recover_a_direction_planted_in_a_model(session_for, tmp_path):
    """tiny-llama with +10u in the embedding of "P" and -10u in that of "N": block 0's output over
    the last 4 tokens carries +-10u, and both methods find u (cosine > 0.99)."""
    session = session_for("tiny-llama")
    lm, path = session.lm, _marker_set(tmp_path)
    u = _unit(torch.Generator().manual_seed(4), lm.width)
    embed = lm.model.get_input_embeddings().weight
    ids = [lm.tokenizer.convert_tokens_to_ids(c) for c in "PN"]
    original = embed.detach().clone()
    try:
        with torch.no_grad():
            embed[ids[0]] += 10 * u
            embed[ids[1]] -= 10 * u
        defs = {m: VectorDef(pairs=str(path), layer=0, window="last:4", method=m) for m in vector_defs.METHODS}
        view = session.view(DataConfig(), vectors=defs)
        for method in vector_defs.METHODS:
            found = vector_of(view, method)
            assert vectors.cosine(found.values, u) > 0.99, method
            assert found.heldout_accuracy == 1.0
    finally:
        with torch.no_grad():
            embed.copy_(original)


def test_cleaning_in_a_model_zeroes_the_named_or_massive_dims(session_for):
    """planted-llama: the rule finds the planted dim at block 2 (on the start token), and cleaning
    with `massive` zeroes exactly it; explicit dims are zeroed exactly; cleaned vectors are unit."""
    session = session_for("planted-llama")
    defs = {
        "massive": VectorDef(pairs="sentiment", layer=2, window="all", method="mean_diff", clean=Cleaning.massive()),
        "dims": VectorDef(pairs="sentiment", layer=2, window="all", method="probe", clean=Cleaning(dims=(1, 5))),
        "top": VectorDef(pairs="sentiment", layer=2, window="all", method="mean_diff", clean=Cleaning(top=3)),
    }
    view = session.view(DataConfig(), vectors=defs)
    massive, explicit, top = (vector_of(view, n) for n in ("massive", "dims", "top"))
    assert massive.zeroed == (PLANT["dim"],)
    assert explicit.zeroed == (1, 5)
    acts = view.contrast("sentiment").pooled("all")[:, 2]
    assert top.zeroed == tuple(sorted(acts.abs().mean(dim=0).topk(3).indices.tolist()))
    for v in (massive, explicit, top):
        assert v.values[list(v.zeroed)].abs().sum() == 0
        assert float(v.values.norm()) == pytest.approx(1.0, abs=1e-6)


NORM_SPEC = """\
claim: norms by hand
vectors:
  v: {pairs: sentiment, layer: 2, window: all, method: mean_diff}
checks:
  - {id: with, measure: activation_norm, pairs: sentiment, window: all, layers: 2, at_least: 1.0e-6}
  - {id: without, measure: activation_norm, pairs: sentiment, window: all, layers: 2, without: massive, at_least: 1.0e-6}
  - {id: share, measure: norm_share, pairs: sentiment, window: all, layers: 2, at_least: 1.0e-6}
  - {id: coef_with, measure: base_coef, vector: v, at_least: 1.0e-6}
  - {id: coef_without, measure: base_coef, vector: v, without: massive, at_least: 1.0e-6}
  - {id: coef_listed, measure: base_coef, vector: v, without: [3, 37], at_least: 1.0e-6}
"""


def test_norm_share_and_calibration_equal_a_hand_computation(session_for, tmp_path):
    """Each example run alone (no padding) through plain transformers; block 2's output averaged
    over positions 1..end; norms with and without the planted massive dim, by hand."""
    session = session_for("planted-llama")
    lm = session.lm
    (tmp_path / "norms.yaml").write_text(NORM_SPEC)
    spec = load_file(tmp_path / "norms.yaml")[0]
    observed = {
        c.key: next(iter(c.values.values())).value for c in Evaluator(spec, session, spec.data).evaluate().observation.checks
    }
    pooled = []
    for text in read_passages(contrast.path_of("sentiment")):
        ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
        pooled.append(reference_block_outputs(lm, ids, torch.ones_like(ids))[2][0, 1:].mean(dim=0))
    acts = torch.stack(pooled).double()  # [200, D]
    cleaned = acts.clone()
    cleaned[:, PLANT["dim"]] = 0
    listed = acts.clone()
    listed[:, [3, 37]] = 0
    norm_with, norm_without = float(acts.norm(dim=1).mean()), float(cleaned.norm(dim=1).mean())
    assert observed["with"] == pytest.approx(norm_with, rel=1e-5)
    assert observed["without"] == pytest.approx(norm_without, rel=1e-5)
    assert observed["share"] == pytest.approx(float(acts[:, PLANT["dim"]].pow(2).sum() / acts.pow(2).sum()), rel=1e-4)
    assert observed["coef_with"] == pytest.approx(norm_with, rel=1e-5)  # / ||unit vector|| = 1
    assert observed["coef_without"] == pytest.approx(norm_without, rel=1e-5)
    assert observed["coef_listed"] == pytest.approx(float(listed.norm(dim=1).mean()), rel=1e-5)
    assert norm_without < norm_with


# ---------------------------------------------------------------- the built-in sets and bad input


def test_built_in_contrast_sets_have_two_traits_and_enough_examples():
    for name in contrast.BUILTIN_SETS:
        data = contrast.read(name)
        assert data.counts() == {"pos": 100, "neg": 100}
        assert int(data.heldout.sum()) == 40 and int((data.heldout & (data.labels == 1)).sum()) == 20
        texts = read_passages(contrast.path_of(name))
        assert len(set(texts)) == 200


@pytest.mark.parametrize(
    "line, message",
    [
        ({"text": "a", "label": "maybe"}, '"label" must be "pos" or "neg"'),
        ({"text": "ab", "label": "pos", "prompt": "a", "response": "x"}, '"prompt" \\+ "response" must equal "text"'),
        ({"text": "a", "label": "pos", "weight": 2}, "unknown field"),
        ({"text": "a", "label": "pos", "split": "test"}, '"split" must be "train" or "heldout"'),
        ({"label": "pos"}, 'needs a string field "text"'),
    ],
)
def test_a_bad_contrast_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = [{"text": f"t{i}", "label": "pos" if i % 2 else "neg"} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in good[:3] + [line] + good[3:]))
    with pytest.raises(DataError, match=message) as info:
        contrast.read(str(path))
    assert f"{path}:4:" in str(info.value)


def test_too_few_training_examples_is_an_error(tmp_path):
    path = tmp_path / "few.jsonl"
    path.write_text(json.dumps({"text": "a", "label": "pos"}) + "\n" + json.dumps({"text": "b", "label": "neg"}) + "\n")
    with pytest.raises(DataError, match="1 training examples labelled 'pos'"):
        contrast.read(str(path))


BAD_SPECS = [
    (
        "vectors:\n  v: {pairs: sentiment, layer: 1, window: all, method: mean_diff}\n"
        "checks:\n  - {measure: cosine, a: v, b: w, at_least: 1.0e-6}\n",
        4,
        "checks[0].b",
        "unknown vector 'w'",
    ),
    (
        "vectors:\n  v: {pairs: sentiment, layer: 1, window: 'last:0', method: mean_diff}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 1.0e-6}\n",
        2,
        "vectors.v.window",
        "pattern",
    ),
    (
        "vectors:\n  v: {pairs: sentiment, layer: 1, window: all, method: mean_diff, clean: {dims: [1], top: 2}}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 1.0e-6}\n",
        2,
        "vectors.v.clean",
        "one of dims",
    ),
    (
        "vectors:\n  v: {pairs: sentiment, layer: 1, window: all, method: mean_diff}\n"
        "  unused: {pairs: sentiment, layer: 1, window: all, method: probe}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 1.0e-6}\n",
        3,
        "vectors.unused",
        "no check reads it",
    ),
    (
        "vectors:\n  v: {pairs: nowhere.jsonl, layer: 1, window: all, method: mean_diff}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 1.0e-6}\n",
        2,
        "vectors.v.pairs",
        "no such file",
    ),
    (
        "vectors:\n  v: {pairs: sentiment, layer: 1, window: all, method: lda}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 1.0e-6}\n",
        2,
        "vectors.v.method",
        "must be one of",
    ),
    (
        "checks:\n  - {measure: norm_share, pairs: sentiment, window: all, dims: top3, at_least: 1.0e-6}\n",
        2,
        "checks[0].dims",
        "",
    ),
]


@pytest.mark.parametrize("body, line, key, message", BAD_SPECS)
def test_a_bad_vector_spec_names_file_line_and_key(tmp_path, body, line, key, message):
    path = tmp_path / "bad.yaml"
    path.write_text("claim: c\n" + body)
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert (info.value.line, info.value.key) == (line + 1, key), str(info.value)
    assert message in str(info.value)


def test_a_vector_layer_past_the_model_is_a_spec_error(session_for, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(
        "claim: c\nvectors:\n  v: {pairs: sentiment, layer: 40, window: all, method: mean_diff}\n"
        "checks:\n  - {measure: accuracy, vector: v, at_least: 1.0e-6}\n"
    )
    spec = load_file(path)[0]
    with pytest.raises(SpecError, match="has 3 blocks") as info:
        Evaluator(spec, session_for("tiny-llama"), spec.data).evaluate()
    assert info.value.key == "vectors.v.layer"


# ---------------------------------------------------------------- the command


def test_vectors_command_prints_the_documented_json(capsys):
    assert cli.main(["vectors", "planted-llama", "--pairs", "sentiment", "--layer", "2", "--window", "last:4", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert list(document) == [
        "model",
        "layer",
        "window",
        "massive_dims",
        "counts",
        "vectors",
        "cosine",
        "energy",
        "norm",
        "calibration",
        "probe_accuracy",
    ]
    assert document["massive_dims"] == [PLANT["dim"]] and document["counts"] == {"pos": 100, "neg": 100}
    assert set(document["vectors"]) == {"mean_diff", "probe", "mean_diff_cleaned", "probe_cleaned"}
    values = {k: torch.tensor(v) for k, v in document["vectors"].items()}
    for name in ("mean_diff_cleaned", "probe_cleaned"):
        assert float(values[name].norm()) == pytest.approx(1.0, abs=1e-5)
        assert values[name][PLANT["dim"]] == 0
    assert document["cosine"]["mean_diff|probe"] == pytest.approx(vectors.cosine(values["mean_diff"], values["probe"]), abs=1e-6)
    assert len(document["cosine"]) == 6
    assert document["energy"]["mean_diff"] == pytest.approx(vectors.energy_share(values["mean_diff"], [PLANT["dim"]]), rel=1e-5)
    assert set(document["norm"]) == {"with", "without", "share"} and document["norm"]["without"] <= document["norm"]["with"]
    assert document["calibration"] == pytest.approx({"with": document["norm"]["with"], "without": document["norm"]["without"]})
    assert set(document["probe_accuracy"]) == {"train", "heldout"}


def test_vectors_command_rejects_a_bad_window_and_layer(capsys):
    assert cli.main(["vectors", "tiny-llama", "--pairs", "sentiment", "--layer", "1", "--window", "last"]) == 2
    assert "last:K, first:K" in capsys.readouterr().err
    assert cli.main(["vectors", "tiny-llama", "--pairs", "sentiment", "--layer", "9", "--window", "all"]) == 2
    assert "has 3 blocks" in capsys.readouterr().err


def test_pca_replicates_are_refits_on_the_resampled_pairs():
    """Each row equals pca on the pairs repeated by their resample counts (a refit per resample)."""
    g = torch.Generator().manual_seed(3)
    direction = _unit(g, 8)
    pos = torch.randn(12, 8, generator=g) + 3 * direction
    neg = torch.randn(12, 8, generator=g)
    counts = torch.stack(
        [torch.ones(12)] + [torch.bincount(torch.randint(0, 12, (12,), generator=g), minlength=12) for _ in range(4)]
    )
    rows = vectors.pca_replicates(pos, neg, counts.double())
    for row, w in zip(rows, counts.long()):
        refit = vectors.pca(pos.repeat_interleave(w, 0), neg.repeat_interleave(w, 0)).double()
        assert torch.allclose(row, refit, atol=1e-5)


def test_probe_refits_equal_refits_from_scratch_and_first_order_replicates_do_not():
    """D > N as on the real models (D = 40, N = 24): the refits agree with logistic_optimum on the
    repeated examples; the first-order replicates alone are visibly off."""
    g = torch.Generator().manual_seed(5)
    direction = _unit(g, 40)
    y = torch.tensor([1, 0] * 12)
    x = torch.randn(24, 40, generator=g) + 1.5 * y[:, None] * direction
    theta = vectors.logistic_optimum(x, y)
    counts = torch.stack([torch.bincount(torch.randint(0, 24, (24,), generator=g), minlength=24) for _ in range(8)])
    exact = torch.stack([vectors.logistic_optimum(x.repeat_interleave(w, 0), y.repeat_interleave(w))[:-1] for w in counts])
    refits = vectors.probe_refits(x, y, theta, counts.double())
    first = vectors.probe_replicates(x, y, theta, counts.double())
    cos = lambda a: torch.nn.functional.cosine_similarity(a, exact, dim=1)
    assert float(cos(refits).min()) > 0.998 and float(cos(refits).min()) > float(cos(first).min())
    assert float((refits - exact).norm(dim=1).max()) < 0.5 * float((first - exact).norm(dim=1).max())


def test_the_probe_refits_low_rank_newton_step_is_the_dense_one():
    """_newton_step solves the Hessian blockwise through N x N systems (D > N); it must be the
    plain Newton step of the count-weighted objective, solved densely in D + 1 dims."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(12, 30, generator=g, dtype=torch.float64)
    sign = torch.tensor([1.0, -1.0] * 6, dtype=torch.float64)
    w = torch.stack([torch.bincount(torch.randint(0, 12, (12,), generator=g), minlength=12) for _ in range(3)]).double()
    t = 0.1 * torch.randn(3, 31, generator=g, dtype=torch.float64)
    features = torch.cat([x, torch.ones(12, 1, dtype=torch.float64)], dim=1)  # [N, D+1]
    penalised = torch.ones(31, dtype=torch.float64)
    penalised[-1] = 0.0
    dense = []
    for wb, tb in zip(w, t):
        wrong = torch.sigmoid(-sign * (features @ tb))
        gradient = penalised * tb - vectors.PROBE_C * features.T @ (wb * sign * wrong)
        hessian = torch.diag(penalised) + vectors.PROBE_C * (features.T * (wb * wrong * (1 - wrong))) @ features
        dense.append(tb - torch.linalg.solve(hessian, gradient))
    low_rank = vectors._newton_step(x, x @ x.T, sign, w, t)
    assert torch.allclose(low_rank, torch.stack(dense), rtol=1e-9, atol=1e-10)
