"""Single weights of a block, addressed as in the math: `weight:PARAM@L[OUT,IN]` (or `[DIM]` for a
norm's scale) names entry [OUT, IN] of the matrix that maps a block's IN features to its OUT
features, whatever the storage. The adapter says where each parameter lives; this module turns
the math's index into the storage's:
  GPT-2's Conv1D stores [in, out]: the index is swapped here, never by the user;
  fused q/k/v (GPT-2 "stacked" [q | k | v], GPT-NeoX "interleaved" per head [q_h | k_h | v_h])
  map q's, k's or v's OUT index to its row of the fused output.

`edited(lm, edits)` writes the entries for the body of a `with` and restores the saved originals
exactly when it exits, also on errors (a copy of the same values back into the same places:
bit-identical)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from massive_checks.engine.models import LoadedModel, parameter
from massive_checks.language.interventions import EVERY, WEIGHT_PARAMS

# PARAM -> (adapter field, which of a fused q/k/v it is: 0, 1, 2; None: not fused)
_FIELDS = {
    "attn.q": ("q", 0),
    "attn.k": ("k", 1),
    "attn.v": ("v", 2),
    "attn.o": ("o_proj", None),
    "mlp.up": ("up", None),
    "mlp.gate": ("gate", None),
    "mlp.down": ("down", None),
    "norm.attn": ("norm_attn", None),
    "norm.mlp": ("norm_mlp", None),
    "norm.attn_post": ("norm_attn_post", None),
    "norm.mlp_post": ("norm_mlp_post", None),
}
assert set(_FIELDS) == set(WEIGHT_PARAMS), "every parameter of the language has a place"


def located(lm: LoadedModel, param: str, layer: int, index: Sequence[int | None]) -> tuple[torch.Tensor, tuple]:
    """(the stored weight tensor, the storage index of entry `index` of PARAM at block `layer`);
    index: (OUT, IN) for a matrix, (DIM,) for a norm's scale, EVERY (or None) = a whole axis.
    ValueError for a parameter the architecture lacks or an index past its shape."""
    field, part = _FIELDS[param]
    path = getattr(lm.adapter, field, None)
    if not path:
        raise ValueError(f"weight {param}: {lm.adapter.family} has no such parameter")
    lm.check_layer(layer, f"weight {param}@{layer}")
    weight = parameter(lm.module(path.format(L=layer)), "weight")
    if weight is None:
        raise ValueError(f"weight {param}@{layer}: the module has no weight")
    if weight.dim() == 1:
        if len(index) != 1:
            raise ValueError(f"weight {param}@{layer} is a vector of {weight.shape[0]}: write [DIM]")
        return weight, (_axis(index[0], weight.shape[0], f"weight {param}@{layer} dim"),)
    if len(index) != 2:
        raise ValueError(f"weight {param}@{layer} is a matrix: write [OUT,IN]")
    out_in = weight.T if lm.adapter.conv1d else weight  # [out, in] as in the math (a view)
    rows, cols = out_in.shape
    fused = part is not None and lm.adapter.qkv != "separate"
    out_size = rows // 3 if fused else rows
    out = _axis(index[0], out_size, f"weight {param}@{layer} OUT")
    if part is not None and fused:
        out = _fused_rows(lm, part, out, out_size)
    col = _axis(index[1], cols, f"weight {param}@{layer} IN")
    return weight, ((col, out) if lm.adapter.conv1d else (out, col))


def _axis(value: int | None, size: int, what: str):
    if value is None or value == EVERY:
        return slice(None)
    if not 0 <= value < size:
        raise ValueError(f"{what} {value} is out of range (0-{size - 1})")
    return value


def _fused_rows(lm: LoadedModel, part: int, out, size: int):
    """Row(s) of the fused output holding q's, k's or v's OUT (an int or every row of the part)."""
    outs = torch.arange(size) if isinstance(out, slice) else torch.tensor([out])
    if lm.adapter.qkv == "stacked":
        rows = part * size + outs
    else:  # interleaved: head h's [q | k | v], each head_dim wide
        hd = lm.head_dim
        rows = (outs // hd) * 3 * hd + part * hd + outs % hd
    return rows if isinstance(out, slice) else int(rows[0])


def check(lm: LoadedModel, requests: Sequence) -> None:
    """ValueError naming a weight the model lacks or an index past its shape, before anything runs."""
    for request in requests:
        if request.target == "weight":
            for layer in request.blocks.blocks(lm.n_layers):
                located(lm, request.selection, layer, request.index)


@contextmanager
def edited(lm: LoadedModel, edits: Sequence, log=None) -> Iterator[None]:
    """Write every weight edit (interventions.Ablation with target "weight") for the body; the
    originals are saved first and copied back on exit, in reverse order (overlapping edits
    restore the first original). `log` (edits.EditLog) notes whether each write changed a value."""
    saved: list[tuple[torch.Tensor, tuple, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for edit in edits:
                weight, where = located(lm, edit.param, edit.layer, edit.index)
                saved.append((weight, where, weight[where].clone()))
                weight[where] = edit.value
                if log is not None:
                    log.record(saved[-1][2], weight[where])
        yield
    finally:
        with torch.no_grad():
            for weight, where, original in reversed(saved):
                weight[where] = original
