"""``vt.spawn``: run a function on N local ranks of a gloo process group (what torchrun does,
from Python, for tests, notebooks and single-machine runs).

Each rank is a fresh process (``torch.multiprocessing`` with the spawn method), joins a
process group on 127.0.0.1 and a free port, runs ``fn(rank, world_size, *args)`` and
leaves the group. Each rank's return value comes back (through a file each, as
``torch.save`` writes it); an exception in any rank is raised in the caller, naming the rank.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
import traceback
from typing import Any, Callable, List, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .errors import bad, check_positive_int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, fn: Callable[..., Any], world: int, port: int, out_dir: str, threads: int,
               backend: str, timeout_s: float, args: Sequence[Any]) -> None:
    torch.set_num_threads(threads)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    path = os.path.join(out_dir, f"rank{rank}.pt")
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        result = {"ok": fn(rank, world, *args)}
    except BaseException as e:  # reported to the caller with the rank's traceback
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    try:
        torch.save(result, path)
    finally:
        if "error" in result:
            os._exit(1)  # the other ranks may wait on this one: do not wait for them in destroy
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], world_size: int, args: Sequence[Any] = (), threads: int = 1,
          backend: str = "gloo", timeout_s: float = 120.0) -> List[Any]:
    """Runs ``fn(rank, world_size, *args)`` on ``world_size`` new processes in one process
    group; returns their results in rank order. ``fn`` must be importable (a module-level
    function), as with any spawned process."""
    check_positive_int("spawn()", "world_size", world_size)
    check_positive_int("spawn()", "threads", threads)
    if not dist.is_available():
        raise bad("spawn()", "torch.distributed is not available in this PyTorch build")
    with tempfile.TemporaryDirectory(prefix="vpipe-spawn-") as out_dir:
        ctx = mp.spawn(_rank_main, args=(fn, world_size, _free_port(), out_dir, threads, backend, timeout_s, tuple(args)),
                       nprocs=world_size, join=False)
        failed = None
        try:
            while not ctx.join():
                pass
        except mp.ProcessRaisedException as e:
            failed = str(e)
        except mp.ProcessExitedException as e:
            failed = str(e)
        results = []
        errors = []
        for r in range(world_size):
            path = os.path.join(out_dir, f"rank{r}.pt")
            if not os.path.exists(path):
                errors.append(f"rank {r}: exited without a result")
                results.append(None)
                continue
            res = torch.load(path, weights_only=False)
            if "error" in res:
                errors.append(f"rank {r}: {res['error']}\n{res['traceback']}")
                results.append(None)
            else:
                results.append(res["ok"])
        if errors:
            first = next(e for e in errors if "exited without" not in e) if any("exited without" not in e for e in errors) \
                else errors[0]
            raise RuntimeError(f"vpipe.torch.spawn(): {first}" + (f"\n({failed})" if failed else ""))
        return results
