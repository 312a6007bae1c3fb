"""Exact order statistics on the device, cheap enough for hooks: the lower median of each row by
radix selection (a histogram of the value's bits, DIGIT_BITS at a time), or by a sort where that is
faster; bit-for-bit the same result either way."""

from __future__ import annotations

import numpy as np
import torch

# Cells selected at once by lower_median on a GPU (their int32 digits: 512 MiB; a 3B model's 28
# blocks at 8x128 are 88M cells, one selection), and rows (their histograms' int64 counts: 256 MiB;
# an 8B model's 32 blocks x 8 rows).
SELECT_CELLS = 2**27


DIGIT_BITS = 16  # bits of the value read per selection pass: 2 passes for float32, 1 for bfloat16


SELECT_ROWS = 2**25 // (2**DIGIT_BITS + 1)


_BITS_OF = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float64: torch.int64}


def lower_median(
    magnitude: torch.Tensor, padding: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor], by_select: bool | None = None
) -> torch.Tensor:
    """Each sequence's lower median of its real cells (NaN where a row has none; a NaN cell is the
    largest, as in a sort, and the pass reports it as an overflow): magnitude [..., B, T, F] >= 0
    with padding cells at 0 (they sort first), padding [B, T, 1] bool, at from sorted_median_at ->
    [..., B]. On a GPU nanmedian (and kthvalue) runs one thread block per row: 5.6 ms for one
    2048x576 row on an H100, 35x a segmented sort, and 9.8x the whole plain forward at 1x2048 once
    done at 30 blocks; a full sort was a quarter of a 3B model's profile pass. So on a GPU: select
    the value at `at` by its bits (select_at), no sort. On the cpu: numpy's partition of the bits
    (partition_at)."""
    flat = magnitude.flatten(-2)  # [..., B, N]
    index, empty = at
    index = index.expand(flat.shape[:-1]).reshape(-1)  # [R]
    rows_flat = flat.reshape(-1, flat.shape[-1])  # [R, N]
    if not (gpu_ways(magnitude) if by_select is None else by_select):
        return partition_at(rows_flat, index).view(flat.shape[:-1]).masked_fill(empty, float("nan"))
    rows = max(1, min(SELECT_ROWS, SELECT_CELLS // max(flat.shape[-1], 1)))
    parts = [select_at(part, index[i : i + rows]) for i, part in zip(range(0, len(index), rows), rows_flat.split(rows))]
    chosen = (parts[0] if len(parts) == 1 else torch.cat(parts)).view(flat.shape[:-1])
    return chosen.masked_fill(empty, float("nan"))


def partition_at(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[R] the k-th smallest (0-based) of each row of values [R, N] >= 0, exactly, as select_at
    gives it (a NaN is largest), by numpy's partition of the values' bits read as integers (a
    non-negative float orders as its bits). One partition per distinct k (rows of one length
    share theirs). On the cpu this is 7-19x faster than torch's nanmedian or kthvalue at
    8 x 128 x 576 cells (numpy's vectorised integer partition), whose ~7 ms at each block was
    about a tenth of a SmolLM2 forward."""
    bits = values.detach().cpu().contiguous().view(_BITS_OF[values.dtype]).numpy()  # [R, N]
    ks = k.cpu().numpy()
    chosen = np.empty(len(ks), dtype=bits.dtype)
    for kth in np.unique(ks):
        rows = np.flatnonzero(ks == kth)
        chosen[rows] = np.partition(bits[rows] if len(rows) < len(ks) else bits, kth, axis=1)[:, kth]
    return torch.from_numpy(chosen).view(values.dtype).to(values.device)


def select_at(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[R] the k-th smallest (0-based) of each row of values [R, N] >= 0, exactly, without sorting:
    a radix selection on the bits. A non-negative float orders as its bits read as an integer, so
    the answer's bits are found DIGIT_BITS at a time, highest first: per pass one histogram of the
    digit over the cells that still match the answer's higher bits, and the digit whose cumulative
    count passes k. NaN (bits above inf's) is largest, as in a sort. ~10 ops per pass (on a GPU,
    launches: a small model's pass is bound by them)."""
    bits = values.view(_BITS_OF[values.dtype])  # [R, N]; the sign bit is 0
    width, rows = bits.element_size() * 8, values.shape[0]
    bins = 2**DIGIT_BITS
    offsets = torch.arange(rows, device=values.device, dtype=torch.int32)[:, None] * (bins + 1)  # [R, 1]: a row's bins
    k = k.to(values.device, torch.int64)
    answer: torch.Tensor | None = None  # the bits found so far [R]
    previous: tuple[torch.Tensor, torch.Tensor] | None = None  # the last pass's (digit [R, N], chosen digit [R])
    for shift in range(width - DIGIT_BITS, -1, -DIGIT_BITS):
        shifted = bits >> shift if shift else bits
        top = shift + DIGIT_BITS == width  # the highest digit needs no mask: the sign bit is 0
        digit = (shifted if top else shifted & (bins - 1)).to(torch.int32)  # [R, N]
        if previous is not None:  # a cell whose higher digits differ from the answer's goes to the extra bin
            digit = digit.masked_fill_(previous[0] != previous[1][:, None], bins)  # (marked `bins` already: differs)
        counts = torch.bincount((digit + offsets).view(-1), minlength=rows * (bins + 1)).view(rows, bins + 1)[:, :bins]
        passed = counts.cumsum(dim=1)  # [R, bins]
        chosen = (passed <= k[:, None]).sum(dim=1)  # [R]: the first digit whose cumulative count exceeds k (< bins)
        if shift:  # the cells below the chosen digit come before the answer
            k = k - (passed - counts).gather(1, chosen[:, None]).squeeze(1)
        part = chosen << shift if shift else chosen
        answer = part if answer is None else answer | part
        previous = digit, chosen
    assert answer is not None
    return answer.to(bits.dtype).view(values.dtype)


def sorted_median_at(real: torch.Tensor, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each row's lower median of its real cells sits once its `cells` cells are sorted:
    the padding zeros sort first (tied with or below every real |a|), so the k-th smallest real
    cell is at (padding cells + k). real [B] real cells per row -> (index [B], empty [B] bool);
    computed once per chunk and shared by every site of that width."""
    index = cells - real + (real - 1).div(2, rounding_mode="floor")
    return index.clamp(min=0, max=cells - 1), real == 0


GPU_WAYS: bool | None = None  # None: the GPU's ways (held stacks, sorted medians, packed copies) on a GPU only


def gpu_ways(tensor: torch.Tensor) -> bool:
    """Whether to compute the GPU's way (fewer, larger launches); forced on for launch counts and tests."""
    return tensor.is_cuda if GPU_WAYS is None else GPU_WAYS
