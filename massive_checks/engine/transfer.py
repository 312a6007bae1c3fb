"""Statistics from the device to the host in few copies: tensors packed into one buffer per dtype
(PACK_BYTES at most), so a pass makes a handful of transfers instead of one per statistic."""

from __future__ import annotations

import torch

from massive_checks.engine.selection import gpu_ways

PACK_BYTES = 128 * 2**20  # device bytes joined per copy by to_host: its only extra memory (a 3B pass keeps ~100 MB)


def to_host(tensors: list[torch.Tensor], packed: bool | None = None) -> list[torch.Tensor]:
    """cpu copies of many tensors. From a GPU they are packed: joined per device and dtype in groups
    of up to PACK_BYTES, each group one copy into pinned memory, one wait in all (a pass keeps ~10
    small tensors per site; one copy each was ~300 launches and pinned buffers per SmolLM2 pass)."""
    if not (any(gpu_ways(t) for t in tensors) if packed is None else packed):
        return [t.cpu() for t in tensors]
    copies: list[torch.Tensor | None] = [None] * len(tensors)
    for group in _pack_groups(tensors):
        joined = torch.cat([tensors[i].reshape(-1) for i in group])  # one launch for the group
        host = torch.empty(joined.shape, dtype=joined.dtype, pin_memory=joined.is_cuda)
        host.copy_(joined, non_blocking=joined.is_cuda)
        for i, part in zip(group, host.split([tensors[i].numel() for i in group])):
            copies[i] = part.view(tensors[i].shape)
    wait_for_device()
    done = [copy for copy in copies if copy is not None]
    assert len(done) == len(tensors), "a tensor in no pack group"
    return done


def _pack_groups(tensors: list[torch.Tensor]) -> list[list[int]]:
    """Indices of tensors grouped by device and dtype (a model spread over GPUs keeps each
    block's statistics on its own GPU), each group up to PACK_BYTES (or one larger tensor)."""
    groups: dict[tuple, list[list[int]]] = {}
    room: dict[tuple, int] = {}
    for i, tensor in enumerate(tensors):
        key, size = (tensor.device, tensor.dtype), tensor.numel() * tensor.element_size()
        if key not in groups or size > room[key]:
            groups.setdefault(key, []).append([])
            room[key] = PACK_BYTES
        groups[key][-1].append(i)
        room[key] -= size
    return [group for runs in groups.values() for group in runs]


def wait_for_device() -> None:
    """GPU work is asynchronous: wait for it (before reading copies, or a clock), on every GPU: a
    model spread over several (--device-map) copies from each (synchronize() waits for one)."""
    if torch.cuda.is_initialized():
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)
