"""The step's speed switches (optim.impl, train.sync_free, train.cuda_graph, feat_d.upsample) train like
the eager reference: the same losses and parameters over several steps, within float rounding."""

import pytest
import torch
import torch.nn.functional as F
from helpers import bundled_photo_dir, random_batches, tiny_config

from sfd.guard import TrainingDiverged
from sfd.models.feat_d import upsample2x_bilinear
from sfd.trainer import build_run, restore, save_checkpoint, train, train_step
from sfd.yamlconfig import ConfigError

REFERENCE = ["optim.impl=for_loop", "feat_d.upsample=interpolate"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def _train_steps(cfg, batches, device="cpu"):
    run = build_run(cfg)
    logs = [{k: float(v) for k, v in train_step(run, lr.to(device), hr.to(device)).items()} for lr, hr in batches]
    return run, logs


def _same(run_a, run_b, logs_a, logs_b, atol):
    for a, b in zip(logs_a, logs_b):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], abs=atol, rel=atol) for k in a), (a, b)
    for part in ("generator", "generator_ema"):
        sa, sb = getattr(run_a, part).state_dict(), getattr(run_b, part).state_dict()
        assert all(torch.allclose(sa[k].cpu(), sb[k].cpu(), atol=atol) for k in sa), part
    for name, d in run_a.discriminators.items():
        sa, sb = d.state_dict(), run_b.discriminators[name].state_dict()
        assert all(torch.allclose(sa[k].cpu(), sb[k].cpu(), atol=atol) for k in sa), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_separable_upsampling_gives_interpolate_values_and_gradients(dtype):
    x = torch.randn(2, 5, 7, 11, dtype=dtype, requires_grad=True)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    out = upsample2x_bilinear(x)
    assert out.dtype == dtype and out.shape == ref.shape
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    else:  # both compute in float32 and round once: equal but for the odd tie at a rounding boundary
        assert (out != ref).float().mean() < 0.01
    w = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad((ref.float() * w.float()).sum(), x)
    (g_out,) = torch.autograd.grad((out.float() * w.float()).sum(), x)
    torch.testing.assert_close(g_out.float(), g_ref.float(), atol=1e-5 if dtype == torch.float32 else 0.05, rtol=0)


@pytest.mark.parametrize(
    "switch",
    [
        ["optim.impl=foreach"],
        ["optim.impl=fused"],
        ["feat_d.upsample=separable"],
        ["optim.impl=fused", "train.sync_free=true"],
    ],
    ids=["foreach", "fused", "separable-upsample", "sync-free"],
)
def test_each_switch_trains_like_the_eager_reference(photos, tmp_path, switch):
    ref_cfg = tiny_config(photos, tmp_path / "ref", REFERENCE)
    cfg = tiny_config(photos, tmp_path / "sw", REFERENCE + switch)
    batches = random_batches(ref_cfg, 3)
    (ref, ref_logs), (run, logs) = _train_steps(ref_cfg, batches), _train_steps(cfg, batches)
    _same(ref, run, ref_logs, logs, atol=1e-5)


def test_sync_free_skips_a_nan_step_on_the_device_and_reports_it_when_logging(photos, tmp_path):
    cfg = tiny_config(photos, tmp_path, ["train.sync_free=true", "train.max_bad_steps=2"])
    run = build_run(cfg)
    (lr, hr), (lr2, hr2) = random_batches(cfg, 2)
    logs = train_step(run, lr, hr)
    assert all(torch.is_tensor(v) for k, v in logs.items() if k.startswith("l_"))  # nothing read on the host
    before = {k: v.clone() for k, v in run.generator.state_dict().items()}
    ema = {k: v.clone() for k, v in run.generator_ema.state_dict().items()}
    d_before = {k: v.clone() for k, v in run.discriminators["feat_d"].state_dict().items() if k.endswith("orig")}
    bad = lr2.clone()
    bad[0, 0, 0, 0] = float("nan")
    train_step(run, bad, hr2)
    assert all(torch.equal(v, before[k]) for k, v in run.generator.state_dict().items())
    assert all(torch.equal(v, ema[k]) for k, v in run.generator_ema.state_dict().items())
    after = run.discriminators["feat_d"].state_dict()
    assert all(torch.equal(after[k], v) for k, v in d_before.items())  # no D step after a bad G step
    from sfd.guard import BadStepCounter

    counter = BadStepCounter(cfg.train.max_bad_steps)
    note = run.bad_steps.check(counter, 2, "last.pth")
    assert "skipped 1 step" in note and counter.total == 1
    train_step(run, lr2, hr2)  # a good step resets the run of bad ones
    assert run.bad_steps.check(counter, 3, "last.pth") is None
    train_step(run, bad, hr2)
    train_step(run, bad, hr2)
    with pytest.raises(TrainingDiverged, match="2 steps in a row.*last.pth"):
        run.bad_steps.check(counter, 5, "last.pth")


def test_switches_are_checked_and_resume_across_a_switch_change(photos, tmp_path):
    with pytest.raises(ConfigError, match="fused"):
        tiny_config(photos, tmp_path, ["train.sync_free=true", "optim.impl=foreach"])
    with pytest.raises(ConfigError, match="fp16"):
        tiny_config(photos, tmp_path, ["train.sync_free=true", "train.precision=fp16"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            build_run(tiny_config(photos, tmp_path, ["train.cuda_graph=true", "train.device=cpu"]))

    # 2 steps with the reference, then 2 with every CPU switch on, resumed from its checkpoint
    cfg = tiny_config(photos, tmp_path / "a", REFERENCE, iterations=2)
    first = train(cfg, progress=False)
    fast = ["optim.impl=fused", "train.sync_free=true", "feat_d.upsample=separable", "train.iterations=4"]
    last = train(None, resume=str(first), overrides=fast, progress=False)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["iteration"] == 4 and ckpt["config"]["train"]["sync_free"] is True
    run = build_run(tiny_config(photos, tmp_path / "b", REFERENCE))  # and back to the reference
    from sfd import checkpoint

    restore(run, checkpoint.load(last))
    assert run.iteration == 4
    save_checkpoint(run, tmp_path / "again.pth")


def test_graphed_step_warms_up_captures_then_replays(monkeypatch):
    """GraphedStep's bookkeeping on the CPU, with stand-ins for the CUDA calls (sfd.graphs)."""
    import sfd.graphs

    calls = []

    def core(run, lr, hr, hr_real, adversarial):
        calls.append(adversarial)
        return {"loss": (lr + hr + hr_real).sum() * (2 if adversarial else 1)}

    class Graph:
        def __init__(self, fn, static):
            self.fn, self.static, self.out = fn, static, fn(*static)

        def replay(self):
            for k, v in self.fn(*self.static).items():
                self.out[k].copy_(v)

    def capture(fn, *static, pool=None):
        graph = Graph(fn, static)
        return graph, graph.out

    monkeypatch.setattr(sfd.graphs, "on_side_stream", lambda fn, *args: fn(*args))
    monkeypatch.setattr(sfd.graphs, "capture", capture)
    step = sfd.graphs.GraphedStep(core, warmup=2)
    batch = [torch.full((2,), float(i)) for i in range(3)]
    losses = [step(None, *[x + n for x in batch], adversarial=n >= 4)["loss"] for n in range(8)]
    assert losses == [torch.tensor(2.0 * (3 + 3 * n)) * (2 if n >= 4 else 1) for n in range(8)]
    assert set(step.graphs) == {False, True}  # one graph per phase, each after 2 eager steps
    assert calls == [False] * 5 + [True] * 5  # per phase: 2 eager, the capture, 2 replays


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_step_trains_like_the_eager_one(photos, tmp_path):
    fast = ["train.device=cuda", "optim.impl=fused", "feat_d.upsample=separable"]
    eager_cfg = tiny_config(photos, tmp_path / "e", fast + ["train.sync_free=true"])
    graph_cfg = tiny_config(photos, tmp_path / "g", fast + ["train.cuda_graph=true"])
    batches = random_batches(eager_cfg, 6)  # 3 eager warm-up steps, the capture, 2 replays
    (eager, eager_logs), (graphed, graph_logs) = (_train_steps(c, batches, "cuda") for c in (eager_cfg, graph_cfg))
    assert graphed.graphed.graphs  # it was captured and replayed
    _same(eager, graphed, eager_logs, graph_logs, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are detected by CUDA's sync debug mode")
def test_sync_free_step_never_waits_for_the_gpu(photos, tmp_path):
    cfg = tiny_config(photos, tmp_path, ["train.device=cuda", "train.sync_free=true"])
    run = build_run(cfg)
    (lr, hr), (lr2, hr2) = random_batches(cfg, 2)
    train_step(run, lr.cuda(), hr.cuda())  # the first step creates Adam's states
    lr2, hr2 = lr2.cuda(), hr2.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(run, lr2, hr2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
