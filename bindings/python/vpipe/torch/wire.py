"""Point-to-point transfers between pipeline ranks with torch.distributed (gloo or nccl).

Activations and gradients cross a cut as the flat list of tensors of the cut's live set
(shapes and dtypes known on both sides from the traced example micro-batch, so nothing but
the data is sent). State that has no fixed shape (a layer's weights with its optimizer
state, when a migration moves it) travels as a ``torch.save`` blob: its length first, then
its bytes.
"""

from __future__ import annotations

import io
from typing import Any, List, Optional

import torch
import torch.distributed as dist

# Tags keep the two directions and the micro-batches apart on one pair of ranks.
TAG_FORWARD, TAG_BACKWARD, TAG_STATE = 0, 1, 2


def tag(kind: int, micro_batch: int = 0) -> int:
    return micro_batch * 4 + kind


def send_tensors(tensors: List[torch.Tensor], dst: int, tg: int) -> List[Any]:
    """Starts sending ``tensors`` (contiguous copies) to ``dst``; returns the work handles."""
    works = []
    for t in tensors:
        works.append(dist.isend(t.detach().contiguous(), dst, tag=tg))
    return works


def recv_tensors(like: List[torch.Tensor], src: int, tg: int) -> List[torch.Tensor]:
    """Receives one tensor of each shape/dtype in ``like`` from ``src``, in order."""
    out = []
    for t in like:
        buf = torch.empty(t.shape, dtype=t.dtype, device=t.device)
        dist.recv(buf, src, tag=tg)
        out.append(buf)
    return out


def send_object(obj: Any, dst: int) -> List[Any]:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    size = torch.tensor([payload.numel()], dtype=torch.int64)
    return [dist.isend(size, dst, tag=tag(TAG_STATE)), dist.isend(payload, dst, tag=tag(TAG_STATE))]


def recv_object(src: int) -> Any:
    size = torch.zeros(1, dtype=torch.int64)
    dist.recv(size, src, tag=tag(TAG_STATE))
    payload = torch.empty(int(size.item()), dtype=torch.uint8)
    dist.recv(payload, src, tag=tag(TAG_STATE))
    return torch.load(io.BytesIO(payload.numpy().tobytes()), weights_only=False)


def broadcast_object(obj: Optional[Any], src: int = 0) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
