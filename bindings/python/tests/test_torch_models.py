"""vpipe.torch on models that are not an nn.Sequential: tracing and linearisation, several
inputs and keyword arguments, tied weights, BatchNorm under RECOMPUTE, and state (model and
optimizer) that round-trips between the model, the applied model and its stages.

Skipped as a whole when PyTorch is not importable (it is an optional dependency)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: vpipe.torch is optional")
from torch import nn  # noqa: E402

import vpipe  # noqa: E402
import vpipe.torch as vt  # noqa: E402
from vpipe import pb  # noqa: E402
from torch_support import hand_plan, one_thread  # noqa: E402,F401

KEEP, SWAP, RECOMPUTE = pb.MEMORY_POLICY_KEEP, pb.MEMORY_POLICY_SWAP, pb.MEMORY_POLICY_RECOMPUTE
VOCAB, D, SEQ = 40, 16, 8




class Block(nn.Module):
    """A residual block whose forward takes two arguments (the issue's TypeError case)."""

    def __init__(self, d: int):
        super().__init__()
        self.ln, self.fc = nn.LayerNorm(d), nn.Linear(d, d)

    def forward(self, h, mask):
        return h + torch.relu(self.fc(self.ln(h))) * mask


class TinyGPT(nn.Module):
    def __init__(self, blocks: int = 4, tied: bool = False, dropout: float = 0.0):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(torch.randn(SEQ, D) * 0.1)
        self.blocks = nn.ModuleList([Block(D) for _ in range(blocks)])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(D, VOCAB, bias=False)
        if tied:
            self.head.weight = self.emb.weight

    def forward(self, idx, mask=None, scale: float = 1.0):
        h = self.emb(idx) + self.pos
        if mask is None:
            mask = torch.ones_like(h[..., :1])
        for b in self.blocks:
            h = b(h, mask)
        return self.head(self.drop(h)) * scale


class ConvNet(nn.Module):
    """conv/bn/relu stacks: BatchNorm buffers move in every training forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean(dim=(2, 3)))


def gpt_data(steps=3, batch=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, VOCAB, (steps, batch, SEQ), generator=g)
    mask = (torch.rand(steps, batch, SEQ, 1, generator=g) > 0.2).float()
    y = torch.randint(0, VOCAB, (steps, batch, SEQ), generator=g)
    return idx, mask, y


def gpt_loss(out, y):
    return nn.functional.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1))




# ---------------------------------------------------------------- tracing and linearisation


def test_gpt_linearises_into_blocks_and_its_cuts_carry_the_live_values():
    idx, mask, _ = gpt_data()
    traced = vt.trace(TinyGPT(), (idx[0],), {"mask": mask[0]})
    names = [l.name for l in traced.layers]
    assert names == ["emb", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "drop", "head"], names
    # After the embedding the cut carries h (the position add joined layer 0); the mask is a
    # model input: a side input every stage gets, never counted as crossing.
    assert traced.live_after[0] == ["add"], traced.live_after[0]
    h_bytes = idx.shape[1] * SEQ * D * 4
    for i in range(len(names) - 1):
        assert traced.output_bytes(i) == h_bytes, (i, traced.output_bytes(i))
    assert traced.output_bytes(len(names) - 1) == idx.shape[1] * SEQ * VOCAB * 4
    assert traced.side_inputs(1, 4) == ["mask"]


def test_a_cut_carrying_two_values_sends_both_and_counts_both():
    class TwoStreams(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            u = self.a(x)
            v = self.b(u)          # u stays live past v: the cut after b carries u and v
            return self.c(v) + u

    model = TwoStreams()
    x = torch.randn(3, 4)
    traced = vt.trace(model, (x,))
    assert traced.live_after[1] == ["a", "b"]
    assert traced.output_bytes(1) == 2 * 3 * 4 * 4
    stages = vt.apply_plan(model, hand_plan([(0, [KEEP, KEEP]), (2, [KEEP])]), (x,))
    assert stages[0].output_names == ["a", "b"] and stages[1].input_names == ["a", "b"]
    torch.testing.assert_close(stages[1](*stages[0](x)), model(x), rtol=0, atol=0)


def test_a_cut_carrying_a_python_number_is_not_offered():
    class SizeUser(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            n = self.a(x).size(0)  # an int computed in layer 0, used in layer 1
            return self.b(x).reshape(n, -1)

    traced = vt.trace(SizeUser(), (torch.randn(2, 4),))
    assert len(traced.layers) == 1, [l.name for l in traced.layers]


def test_untraceable_module_is_named_with_the_fix():
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4))
            self.branchy = Branchy()

        def forward(self, x):
            return self.branchy(self.inner(x))

    with pytest.raises(vpipe.VPipeError, match="could not trace Outer inside module 'branchy'.*leaf_modules=\\['branchy'\\]"):
        vt.trace(Outer(), (torch.randn(2, 4),))
    traced = vt.trace(Outer(), (torch.randn(2, 4),), leaf_modules=["branchy"])
    assert [l.name for l in traced.layers] == ["inner.0", "branchy"]


def test_profile_and_plan_any_model_with_kwargs():
    idx, mask, y = gpt_data()
    model = TinyGPT()
    spec = vt.profile(model, (idx[0],), y[0], loss_fn=gpt_loss, example_kwargs={"mask": mask[0]}, repeats=2, warmup=1)
    assert [l.name for l in spec.layers] == ["emb", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "drop", "head"]
    assert all(l.profile.fwd_seconds > 0 and l.profile.bwd_seconds > 0 for l in spec.layers)
    assert spec.layers[0].profile.param_bytes == (VOCAB * D + SEQ * D) * 4  # emb and the pos parameter
    plan = vt.plan_for(model, (idx[0],), devices=[vt.cpu_device(1 << 30)] * 2, links=[1e9], micro_batches=2,
                       model_spec=spec)
    assert len(plan.stages) == 2
    applied = vt.PipelinedModel(model, plan, (idx[0],), example_kwargs={"mask": mask[0]})
    torch.testing.assert_close(applied(idx[1], mask=mask[1]), model(idx[1], mask=mask[1]), rtol=0, atol=0)


def test_tied_embeddings_train_exactly_in_one_process():
    idx, mask, y = gpt_data()
    reference = TinyGPT(tied=True)
    model = copy.deepcopy(reference)
    traced = vt.trace(model, (idx[0],), {"mask": mask[0]})
    assert traced.shared_parameters() == {"emb.weight": [0, 6]}
    applied = vt.PipelinedModel(model, hand_plan([(0, [KEEP, RECOMPUTE, KEEP]), (3, [RECOMPUTE, RECOMPUTE, KEEP, KEEP])]),
                                (idx[0],), example_kwargs={"mask": mask[0]})
    assert applied.stages[1]._modules["head"].weight is applied.stages[0]._modules["emb"].weight
    got, want = train(applied, idx, mask, y), train(reference, idx, mask, y)
    assert got == want


def train(model, idx, mask, y, steps=None, opt=None, lr=0.05):
    opt = opt or torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for s in range(steps or idx.shape[0]):
        opt.zero_grad()
        loss = gpt_loss(model(idx[s], mask=mask[s]), y[s])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------- recompute and buffers


def test_batchnorm_under_recompute_counts_each_micro_batch_once():
    torch.manual_seed(3)
    xs = torch.randn(4, 6, 3, 5, 5)  # 4 micro-batches
    ys = torch.randint(0, 5, (4, 6))
    reference = ConvNet()
    model = copy.deepcopy(reference)
    traced = vt.trace(model, (xs[0],))
    n = len(traced.layers)
    applied = vt.PipelinedModel(model, hand_plan([(0, [RECOMPUTE] * 4), (4, [RECOMPUTE] * (n - 4))]), (xs[0],))
    assert all(p == RECOMPUTE for s in applied.stages for p, _ in s.segments)
    opt_a = torch.optim.SGD(applied.parameters(), lr=0.1)
    opt_r = torch.optim.SGD(reference.parameters(), lr=0.1)
    for x, y in zip(xs, ys):
        for m, opt in ((applied, opt_a), (reference, opt_r)):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for bn in ("stem.1", "body.1"):
        got = model.get_submodule(bn).num_batches_tracked.item()
        assert got == 4, f"{bn}.num_batches_tracked: expected 4 (one per micro-batch forwarded), got {got}"
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    model.eval(), reference.eval()
    with torch.no_grad():
        got = nn.functional.cross_entropy(applied(xs[0]), ys[0]).item()
        want = nn.functional.cross_entropy(reference(xs[0]), ys[0]).item()
    assert got == want, f"eval loss {got} differs from the unplanned model's {want}"


def test_dropout_under_recompute_replays_its_mask():
    idx, mask, y = gpt_data()
    reference = TinyGPT(dropout=0.3)
    model = copy.deepcopy(reference)
    applied = vt.PipelinedModel(model, hand_plan([(0, [RECOMPUTE] * 3), (3, [RECOMPUTE] * 4)]),
                                (idx[0],), example_kwargs={"mask": mask[0]})
    torch.manual_seed(11)
    got = train(applied, idx, mask, y)
    torch.manual_seed(11)
    want = train(reference, idx, mask, y)
    assert got == want


# ---------------------------------------------------------------- state round trip


def test_state_round_trips_through_model_applied_model_and_stages():
    idx, mask, y = gpt_data(steps=6)
    plan = hand_plan([(0, [KEEP, RECOMPUTE, KEEP]), (3, [KEEP, RECOMPUTE, RECOMPUTE, KEEP])])
    example = ((idx[0],), {"mask": mask[0]})

    # Train the applied model 3 steps, save model and optimizer state.
    model = TinyGPT()
    applied = vt.PipelinedModel(model, plan, example[0], example_kwargs=example[1])
    assert list(applied.state_dict()) == list(TinyGPT().state_dict())
    opt = torch.optim.Adam(applied.parameters(), lr=0.05)
    first = train(applied, idx, mask, y, steps=3, opt=opt)
    saved_model = copy.deepcopy(applied.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    stage_states = [copy.deepcopy(s.state_dict()) for s in applied.stages]
    stage_opt = vt.optimizer_state_by_name(opt, applied)
    continued = train(applied, idx[3:], mask[3:], y[3:], opt=opt)

    # 1. Into a fresh plain model and optimizer: the same losses.
    fresh = TinyGPT(blocks=4)
    fresh.load_state_dict(saved_model)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.05)
    fresh_opt.load_state_dict(saved_opt)
    assert train(fresh, idx[3:], mask[3:], y[3:], opt=fresh_opt) == continued

    # 2. Into fresh stages of a differently cut plan, stage by stage, optimizer by name.
    other = TinyGPT()
    other_applied = vt.PipelinedModel(other, hand_plan([(0, [KEEP] * 2), (2, [RECOMPUTE] * 5)]),
                                      example[0], example_kwargs=example[1])
    for s in other_applied.stages:
        for state in stage_states:
            s.load_state_dict(state, strict=False)
    other_opt = torch.optim.Adam(other_applied.parameters(), lr=0.05)
    vt.load_optimizer_state_by_name(other_opt, other_applied, stage_opt)
    assert train(other_applied, idx[3:], mask[3:], y[3:], opt=other_opt) == continued
    assert first[0] != continued[0]

    # 3. A stage loads the whole model's state (other stages' keys skipped), not typos.
    stage = vt.PipelinedModel(TinyGPT(), plan, example[0], example_kwargs=example[1]).stages[1]
    stage.load_state_dict(saved_model)
    torch.testing.assert_close(stage.state_dict()["head.weight"], saved_model["head.weight"], rtol=0, atol=0)
    with pytest.raises(vpipe.VPipeError, match="unexpected keys \\['hed.weight'\\]"):
        stage.load_state_dict({**saved_model, "hed.weight": saved_model["head.weight"]})


# ---------------------------------------------------------------- measured memory


def test_peak_tensor_bytes_sees_forward_backward_and_frees():
    torch.manual_seed(0)
    layer = nn.Linear(256, 256)
    x = torch.randn(64, 256)
    static = list(layer.parameters()) + [x]
    with vt.PeakTensorBytes(static) as peak:
        y = layer(x)
        y.sum().backward()
        del y
    params = sum(p.numel() * 4 for p in layer.parameters())
    assert peak.start == params + x.numel() * 4
    # the output (64x256) and the gradients (as big as the parameters) were alive together
    assert peak.peak >= peak.start + 64 * 256 * 4 + params, (peak.start, peak.peak)
    assert peak.current == peak.start + params, "after the step only the new .grad tensors stay"
