"""Tests of vpipe.torch, the PyTorch adapter: profile -> plan -> apply_plan.

Skipped as a whole when PyTorch is not importable (it is an optional dependency).
Everything runs on the CPU with one intra-op thread so that results are deterministic:
the training comparisons require EXACT equality (bitwise) of losses and weights, which
holds because activation checkpointing replays the same kernels on the same inputs and
save_on_cpu only copies tensors.

Run:  VPIPE_LIBRARY=.build/release/libvpipe.so PYTHONPATH=bindings/python \
          python3 -m pytest -q bindings/python/tests/test_torch_adapter.py
"""

from __future__ import annotations

import copy
import os
import socket
import tempfile

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: vpipe.torch is optional")
nn = torch.nn

import vpipe  # noqa: E402
import vpipe.torch as vt  # noqa: E402
from vpipe import pb  # noqa: E402
from torch_support import hand_plan, one_thread  # noqa: E402,F401

KEEP, SWAP, RECOMPUTE = pb.MEMORY_POLICY_KEEP, pb.MEMORY_POLICY_SWAP, pb.MEMORY_POLICY_RECOMPUTE
F32 = 4




# ---------------------------------------------------------------- models


def mlp(width: int = 128, classes: int = 10, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [
        nn.Linear(32, width), nn.ReLU(),
        nn.Linear(width, width), nn.GELU(),
        nn.Linear(width, width), nn.ReLU(),
    ]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.LayerNorm(width), nn.Linear(width, classes)]
    return nn.Sequential(*layers)


class Block(nn.Module):
    """A pre-LN transformer block (causal self-attention + 4x MLP)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class Head(nn.Module):
    def __init__(self, d: int, vocab: int):
        super().__init__()
        self.ln, self.out = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, x):
        return self.out(self.ln(x)).flatten(0, 1)  # [batch*seq, vocab] for cross-entropy


def transformer(vocab=64, d=32, heads=4, seq=16, blocks=3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(vocab, d), *[Block(d, heads) for _ in range(blocks)], Head(d, vocab))




# ---------------------------------------------------------------- profile


def test_profile_mlp_measures_every_field():
    model = mlp()
    x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))
    before = copy.deepcopy(model.state_dict())
    spec = vt.profile(model, x, y, loss_fn=nn.CrossEntropyLoss())

    assert len(spec.layers) == len(model)
    assert spec.input_bytes == 16 * 32 * F32
    assert spec.state_bytes_per_param_byte == 4.0
    inputs, h = [], x
    with torch.no_grad():
        for layer in model:
            inputs.append(h)
            h = layer(h)
    for l, (layer, ls) in enumerate(zip(model, spec.layers)):
        p = ls.profile
        assert p.fwd_seconds > 0 and p.bwd_seconds > 0, ls.name
        assert p.param_bytes == sum(q.numel() * F32 for q in layer.parameters()), ls.name
        assert p.output_bytes == (inputs[l + 1].numel() * F32 if l + 1 < len(model) else 16 * 10 * F32)
        x_bytes = inputs[l].numel() * F32
        if isinstance(layer, nn.Linear) and l + 1 < len(model):
            assert p.stash_bytes == x_bytes, ls.name          # saves its input (weights excluded)
        if isinstance(layer, (nn.ReLU, nn.GELU)):
            assert p.stash_bytes >= p.output_bytes > 0, ls.name  # ReLU saves its output, GELU its input
        if isinstance(layer, nn.LayerNorm):
            assert p.stash_bytes > x_bytes, ls.name           # input + mean + rstd
    # The last layer carries the loss: its input, the log-softmax and the targets.
    assert spec.layers[-1].profile.stash_bytes > inputs[-1].numel() * F32
    # The model is untouched: weights, no gradients.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(q.grad is None for q in model.parameters())


def test_profile_transformer_and_plan_for():
    model = transformer()
    tokens = torch.randint(0, 64, (4, 16))
    targets = torch.randint(0, 64, (4 * 16,))
    spec = vt.profile(model, tokens, targets, loss_fn=nn.CrossEntropyLoss(), state_bytes_per_param_byte=2)
    assert spec.input_bytes == 4 * 16 * 8  # int64 token ids
    assert spec.state_bytes_per_param_byte == 2
    act = 4 * 16 * 32 * F32
    for ls in spec.layers:
        p = ls.profile
        assert p.fwd_seconds > 0 and p.param_bytes > 0, ls.name
        assert p.output_bytes > 0, ls.name
    # The embedding's backward needs no activation gradient but still runs (weight gradient).
    assert spec.layers[0].profile.bwd_seconds > 0
    for ls in spec.layers[1:-1]:  # blocks save far more than their output (attention, 4x MLP)
        assert ls.profile.output_bytes == act
        assert ls.profile.stash_bytes >= 4 * act, ls.name
        assert ls.profile.bwd_seconds > 0

    plan = vt.plan_for(model, tokens, devices=[(1 << 30, 10e9)] * 2, links=[(10e9, 1e-6)],
                       schedule=pb.SCHEDULE_1F1B, micro_batches=4, model_spec=spec)
    assert [s.first_layer for s in plan.stages][0] == 0 and plan.stages[-1].last_layer == len(model) - 1
    stages = vt.apply_plan(model, plan)
    assert len(stages) == 2
    with torch.no_grad():
        assert torch.equal(stages[1](stages[0](tokens)), model(tokens))
    # Profiling inside plan_for works too (a single device needs no links).
    one = vt.plan_for(model, tokens, devices=[(1 << 30, 10e9)], micro_batches=2,
                      sample_target=targets, loss_fn=nn.CrossEntropyLoss(), repeats=1)
    assert len(one.stages) == 1


def test_plan_for_checks_links_and_reports_infeasible():
    model = mlp()
    x = torch.randn(8, 32)
    with pytest.raises(vpipe.VPipeError, match="need 1 links"):
        vt.plan_for(model, x, devices=[(1 << 30, 1e9)] * 2, micro_batches=2)
    with pytest.raises(vpipe.InfeasibleError):
        vt.plan_for(model, x, devices=[(1024, 1e9)] * 2, links=[1e9], micro_batches=2, repeats=1)


def test_profile_rejects_bad_arguments():
    with pytest.raises(vpipe.VPipeError, match="both loss_fn and sample_target"):
        vt.profile(mlp(), torch.randn(1, 32), loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(vpipe.VPipeError, match="repeats must be an integer >= 1, got 0"):
        vt.profile(mlp(), torch.randn(1, 32), repeats=0)
    with pytest.raises(vpipe.VPipeError, match="example inputs do not match"):
        vt.profile(mlp(), (torch.randn(1, 32), torch.randn(1, 32)))
    with pytest.raises(vpipe.VPipeError, match="state_bytes_per_param_byte must be a finite number"):
        vt.profile(mlp(), torch.randn(1, 32), state_bytes_per_param_byte=float("nan"))


def test_profile_refuses_meta_tensors_naming_them():
    with pytest.raises(vpipe.VPipeError, match="input 'input' is on the meta device"):
        vt.profile(mlp(), torch.randn(1, 32, device="meta"))
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(32, 8))
    with pytest.raises(vpipe.VPipeError, match="parameter or buffer '0.weight' is on the meta device"):
        vt.profile(model, torch.randn(1, 32))


def test_profile_reports_medians_and_spread():
    prof = vt.measure(mlp(), torch.randn(8, 32), repeats=4, warmup=1)
    assert len(prof.layers) == len(prof.spec.layers) == 8
    for m, ls in zip(prof.layers, prof.spec.layers):
        assert len(m.fwd_samples) == len(m.bwd_samples) == 4, "one sample per timed repeat, warm-up left out"
        assert ls.profile.fwd_seconds == sorted(m.fwd_samples)[1] / 2 + sorted(m.fwd_samples)[2] / 2
        assert m.fwd_spread >= 0 and m.bwd_spread >= 0
    assert prof.spread == max(max(m.fwd_spread, m.bwd_spread) for m in prof.layers)
    assert "spread" in prof.report().splitlines()[0]


@pytest.mark.parametrize("field, devices, links, message", [
    ("memory", [(-1, 1e9)], None, r"devices\[0\].memory_bytes must be a finite number > 0, got -1"),
    ("bandwidth", [(1 << 30, float("nan"))], None, r"devices\[0\].host_bandwidth must be a finite number > 0, got nan"),
    ("speed", [(1 << 30, 1e9, float("inf"))], None, r"devices\[0\].speed must be a finite number > 0"),
    ("link", [(1 << 30, 1e9)] * 2, [(1e9, -1.0)], r"links\[0\].latency must be a finite number >= 0, got -1.0"),
    ("link nan", [(1 << 30, 1e9)] * 2, [float("nan")], r"links\[0\].bandwidth must be a finite number > 0"),
    ("empty", [], None, "devices is empty"),
])
def test_plan_for_names_the_bad_field(field, devices, links, message):
    with pytest.raises(vpipe.VPipeError, match=message):
        vt.plan_for(mlp(), torch.randn(4, 32), devices=devices, links=links, model_spec=pb.ModelSpec())
    with pytest.raises(vpipe.VPipeError, match="micro_batches must be an integer >= 1, got -2"):
        vt.plan_for(mlp(), torch.randn(4, 32), devices=[(1 << 30, 1e9)], micro_batches=-2, model_spec=pb.ModelSpec())


# ---------------------------------------------------------------- apply_plan


def test_apply_plan_structure():
    model = mlp()  # 8 layers
    plan = hand_plan([(0, [KEEP, RECOMPUTE, RECOMPUTE, SWAP]), (4, [RECOMPUTE, KEEP, RECOMPUTE, RECOMPUTE])])
    s0, s1 = vt.apply_plan(model, plan)
    assert [(p, seg.layers) for p, seg in s0.segments] == [(KEEP, [0]), (RECOMPUTE, [1, 2]), (SWAP, [3])]
    assert [(p, seg.layers) for p, seg in s1.segments] == [(RECOMPUTE, [4]), (KEEP, [5]), (RECOMPUTE, [6, 7])]
    # The model's own modules, under the model's own names.
    assert s0._modules["0"] is model[0] and s1._modules["5"] is model[5]
    assert list(s0.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # Parameters are shared with the model, not copied.
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in s0.parameters()} | {id(p) for p in s1.parameters()} == ids


@pytest.mark.parametrize(
    "plan, message",
    [
        (hand_plan([(1, [KEEP] * 7)]), "stage 0 covers layers 1..7"),
        (hand_plan([(0, [KEEP] * 4), (5, [KEEP] * 3)]), "stage 1 covers layers 5..7"),
        (hand_plan([(0, [KEEP] * 5)]), "end at layer 4"),
        (hand_plan([(0, [KEEP] * 9)]), "stage 0 covers layers 0..8"),
        (hand_plan([(0, [KEEP] * 7 + [pb.MEMORY_POLICY_UNSPECIFIED])]), "layer 7 .stage 0. has policy UNSPECIFIED"),
        (pb.Plan(), "no stages"),
    ],
)
def test_apply_plan_rejects_bad_plans(plan, message):
    with pytest.raises(vpipe.VPipeError, match=message):
        vt.apply_plan(mlp(), plan)


def test_apply_plan_checks_policy_count():
    plan = hand_plan([(0, [KEEP] * 8)])
    del plan.stages[0].policy[-1]
    with pytest.raises(ValueError, match="7 policies for 8 layers"):
        vt.apply_plan(mlp(), plan)


def _train(stages, steps, x, y, lr=0.1):
    """SGD on a chain of modules; returns the losses (python floats, exact)."""
    params = [p for s in stages for p in s.parameters()]
    opt = torch.optim.SGD(params, lr=lr)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        h = x[step]
        for s in stages:
            h = s(h)
        loss = nn.functional.cross_entropy(h, y[step])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_applied_plan_trains_exactly_like_the_model():
    # RECOMPUTE segments (one containing dropout: checkpoint must replay the same mask),
    # SWAP layers and KEEP layers on two stages, chained in one process.
    steps = 5
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(steps, 16, 32, generator=gen)
    y = torch.randint(0, 10, (steps, 16), generator=gen)
    reference = mlp(dropout=0.25)  # 9 layers: 0..5 Linear/activations, 6 Dropout, 7 LayerNorm, 8 Linear
    planned = copy.deepcopy(reference)
    reference.train(), planned.train()
    initial = copy.deepcopy(reference.state_dict())
    n = len(reference)
    plan = hand_plan([(0, [KEEP, SWAP, RECOMPUTE, RECOMPUTE]), (4, [SWAP] + [RECOMPUTE] * 3 + [KEEP] * (n - 8))])
    stages = vt.apply_plan(planned, plan)
    assert any(p == RECOMPUTE and 6 in seg.layers for p, seg in stages[1].segments)  # the Dropout is recomputed

    torch.manual_seed(123)
    want = _train([reference], steps, x, y)
    torch.manual_seed(123)
    got = _train(stages, steps, x, y)
    assert got == want  # bitwise: tolerance 0
    assert not torch.equal(reference[0].weight, initial["0.weight"])  # it did train
    for (k, a), b in zip(reference.state_dict().items(), planned.state_dict().values()):
        assert torch.equal(a, b), k


def test_recompute_keeps_less_than_keep_as_the_cost_model_says():
    """Saved-activation bytes per stage, the CPU proxy for device memory.

    A CPU has no peak-memory counter (torch.cuda.max_memory_allocated has no CPU twin), so
    the test counts what autograd keeps between forward and backward with saved_tensors_hooks,
    which is the stash term of the cost model. GPipe-style: m forwards in flight, then m
    backwards. Per micro-batch, KEEP saves Σ a_l of the profile less the tensors two
    neighbouring layers both save (see below), a RECOMPUTE segment exactly its input x_first; SWAP saves nothing on the device (save_on_cpu takes
    the tensors before the outer hook sees them; on a CPU they merely move to another host
    tensor). The cost model's peak for each plan (vpipe.evaluate) falls in the same order.
    """
    model = mlp()
    m = 4
    xs = [torch.randn(16, 32) for _ in range(m)]
    spec = vt.profile(model, xs[0], repeats=1)
    n = len(model)
    stash = [ls.profile.stash_bytes for ls in spec.layers]
    first = 2  # a stage of layers 2..n-1, fed by layer 1's output
    x_first = spec.layers[first - 1].profile.output_bytes

    head = model[:first]
    measured = {}
    for name, policy in (("keep", KEEP), ("recompute", RECOMPUTE), ("swap", SWAP)):
        plan = hand_plan([(0, [KEEP] * first), (first, [policy] * (n - first))])
        stage = vt.apply_plan(model, plan)[1]
        with vt.saved_tensor_bytes(exclude=model.parameters()) as saved:
            outs = []
            for x in xs:
                with torch.no_grad():
                    h = head(x)
                outs.append(stage(h.requires_grad_()))
        measured[name] = saved.bytes
        for o in outs:
            o.sum().backward()
        model.zero_grad(set_to_none=True)

    # KEEP saves at most the profile's Σ a_l per micro-batch: profiling layers one by one
    # counts a tensor twice when one layer saves its output and the next saves the same
    # tensor as its input (here ReLU 5 -> LayerNorm 6), so the cost model is conservative
    # by that overlap. Every micro-batch saves the same.
    assert measured["keep"] % m == 0
    overlap = spec.layers[5].profile.output_bytes  # ReLU 5's output = LayerNorm 6's input
    assert measured["keep"] == m * (sum(stash[first:]) - overlap)
    assert measured["recompute"] == m * x_first
    assert measured["swap"] == 0
    assert measured["recompute"] < measured["keep"]

    # The cost model agrees on the order of the peaks (m micro-batches in flight, GPipe).
    cluster = pb.ClusterSpec()
    for _ in range(2):
        cluster.devices.add(memory_bytes=1 << 30, host_bandwidth=10e9)
    cluster.links.add(bandwidth=10e9)
    peaks = {}
    for name, policy in (("keep", KEEP), ("recompute", RECOMPUTE), ("swap", SWAP)):
        plan = hand_plan([(0, [KEEP] * first), (first, [policy] * (n - first))], micro_batches=m)
        peaks[name] = vpipe.evaluate(spec, cluster, plan).plan.stages[1].peak_memory_bytes
    assert peaks["recompute"] < peaks["keep"]
    assert peaks["keep"] - peaks["recompute"] == m * sum(stash[first:]) - m * x_first - sum(stash[first:])


# ---------------------------------------------------------------- torch.distributed.pipelining


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PIPE_BATCH, PIPE_MB, PIPE_STEPS, PIPE_LR = 32, 4, 3, 0.1


def _pipe_plan(n: int, schedule: int) -> pb.Plan:
    return hand_plan([(0, [KEEP, RECOMPUTE, RECOMPUTE, SWAP]), (4, [RECOMPUTE, SWAP] + [KEEP] * (n - 6))],
                     schedule=schedule, micro_batches=PIPE_MB)


def _pipe_data():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(PIPE_STEPS, PIPE_BATCH, 32, generator=gen)
    y = torch.randint(0, 10, (PIPE_STEPS, PIPE_BATCH), generator=gen)
    return x, y


def _pipe_worker(rank, world, port, init_path, out_path, schedule):
    import datetime

    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        model = mlp()
        model.load_state_dict(torch.load(init_path))
        stage_module = vt.apply_plan(model, _pipe_plan(len(model), schedule))[rank]
        stage = PipelineStage(stage_module, rank, world, torch.device("cpu"))
        cls = ScheduleGPipe if schedule == pb.SCHEDULE_GPIPE else Schedule1F1B
        sched = cls(stage, n_microbatches=PIPE_MB, loss_fn=nn.CrossEntropyLoss())
        opt = torch.optim.SGD(stage_module.parameters(), lr=PIPE_LR)
        x, y = _pipe_data()
        losses = []
        for step in range(PIPE_STEPS):
            opt.zero_grad()
            if rank == 0:
                sched.step(x[step])
            else:
                mb = []
                sched.step(target=y[step], losses=mb)
                losses.append([l.item() for l in mb])
            opt.step()
        torch.save({"losses": losses, "state": stage_module.state_dict()}, out_path.format(rank=rank))
    finally:
        dist.destroy_process_group()


def test_stages_run_in_torch_distributed_pipelining(schedule=pb.SCHEDULE_1F1B):
    pytest.importorskip("torch.distributed.pipelining")
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    model = mlp()
    with tempfile.TemporaryDirectory() as tmp:
        init_path = os.path.join(tmp, "init.pt")
        out_path = os.path.join(tmp, "rank{rank}.pt")
        torch.save(model.state_dict(), init_path)
        mp.spawn(_pipe_worker, args=(2, _free_port(), init_path, out_path, schedule), nprocs=2, join=True)
        results = [torch.load(out_path.format(rank=r)) for r in range(2)]

    # The reference: the unwrapped model in one process, micro-batch by micro-batch
    # (torch.tensor_split along dim 0, as the schedule does), gradients summed in micro-batch
    # order and divided by the micro-batch count (the schedule's scale_grads=True).
    reference = mlp()
    reference.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(reference.parameters(), lr=PIPE_LR)
    x, y = _pipe_data()
    want = []
    for step in range(PIPE_STEPS):
        opt.zero_grad()
        step_losses = []
        for xm, ym in zip(x[step].tensor_split(PIPE_MB), y[step].tensor_split(PIPE_MB)):
            loss = nn.functional.cross_entropy(reference(xm), ym)
            loss.backward()
            step_losses.append(loss.item())
        for p in reference.parameters():
            p.grad.div_(PIPE_MB)
        opt.step()
        want.append(step_losses)

    # Exact (bitwise) equality: both sides run the same kernels on the same shapes with one
    # thread, in the same order; gloo only moves bytes.
    got = results[1]["losses"]
    assert len(got) == PIPE_STEPS
    for g, w in zip(got, want):
        assert g == w
    # Weights after training, stage by stage, under the model's own keys.
    ref_state = reference.state_dict()
    for r in range(2):
        for key, value in results[r]["state"].items():
            assert torch.equal(value, ref_state[key]), key
