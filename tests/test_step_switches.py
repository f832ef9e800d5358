"""The step's speed switches (optim.impl, train.sync_free, train.cuda_graph, feat_d.upsample) train like
the eager reference: the same losses and parameters over several steps, within float rounding; and what
the CUDA-graph mode adds (sfd.train.modes) holds on the CPU where a CPU can check it."""

import pytest
import torch
import torch.nn.functional as F
from helpers import bundled_photo_dir, random_batches, tiny_config

from sfd.models.feat_d import upsample2x_bilinear
from sfd.train import build_run, restore, save_checkpoint, train, train_step
from sfd.train.guard import BadStepCounter, TrainingDiverged
from sfd.train.modes import GraphedStep, step_mode
from sfd.train.schedulers import build_scheduler, step_schedules
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


def test_a_nan_step_is_skipped_alike_by_the_eager_and_the_sync_free_step(photos, tmp_path):
    """After a bad G step the eager step runs no D step; the sync-free one runs its forwards (spectral norm's
    power iteration advances u/v) and must leave every D buffer as the eager one does. No parameter, EMA or
    Adam step count moves in either."""
    runs, cfgs = {}, {}
    for mode in ("eager", "sync_free"):
        cfgs[mode] = tiny_config(
            photos, tmp_path / mode, ["optim.impl=fused", f"train.sync_free={mode == 'sync_free'}"]
        )
        runs[mode] = build_run(cfgs[mode])
        assert runs[mode].step.name == mode
    (lr, hr), (lr2, hr2), (lr3, hr3) = random_batches(cfgs["eager"], 3)
    bad = lr2.clone()
    bad[0, 0, 0, 0] = float("nan")

    def state(run):
        parts = {"g": run.generator, "ema": run.generator_ema, **run.discriminators}
        return {f"{n}.{k}": v.detach().clone() for n, m in parts.items() for k, v in m.state_dict().items()}

    def adam_steps(run):
        return {k: [float(s["step"]) for s in o.state.values()] for k, o in run.optimizers.items()}

    for mode, run in runs.items():
        logs = train_step(run, lr, hr)
        assert all(torch.is_tensor(v) == (mode == "sync_free") for k, v in logs.items() if k.startswith("l_"))
        params = {n: p.detach().clone() for n, p in run.generator.named_parameters()}
        steps = adam_steps(run)
        train_step(run, bad, hr2)
        assert all(torch.equal(p, params[n]) for n, p in run.generator.named_parameters())
        assert adam_steps(run) == steps
    after_nan = {mode: state(run) for mode, run in runs.items()}
    for k, v in after_nan["eager"].items():  # buffers included: u/v as the eager step left them
        assert torch.allclose(v, after_nan["sync_free"][k], atol=1e-6), k
    for run in runs.values():
        train_step(run, lr3, hr3)
    after = {mode: state(run) for mode, run in runs.items()}
    assert all(torch.allclose(v, after["sync_free"][k], atol=1e-5) for k, v in after["eager"].items())


def test_sync_free_reports_skipped_steps_when_logging_and_stops_after_too_many(photos, tmp_path):
    cfg = tiny_config(photos, tmp_path, ["train.sync_free=true", "train.max_bad_steps=2"])
    run = build_run(cfg)
    (lr, hr), (lr2, hr2) = random_batches(cfg, 2)
    bad = lr2.clone()
    bad[0, 0, 0, 0] = float("nan")
    train_step(run, lr, hr)
    train_step(run, bad, hr2)
    counter = BadStepCounter(cfg.train.max_bad_steps)
    assert run.step.check_bad_steps(run, counter, 2, "last.pth", due=False) is None  # not read between lines
    note = run.step.check_bad_steps(run, counter, 2, "last.pth", due=True)
    assert "skipped 1 step" in note and counter.total == 1
    train_step(run, lr2, hr2)  # a good step resets the run of bad ones
    assert run.step.check_bad_steps(run, counter, 3, "last.pth", due=True) is None
    train_step(run, bad, hr2)
    train_step(run, bad, hr2)
    with pytest.raises(TrainingDiverged, match="2 steps in a row.*last.pth"):
        run.step.check_bad_steps(run, counter, 5, "last.pth", due=True)


def test_switches_are_checked_and_resume_across_a_switch_change(photos, tmp_path):
    with pytest.raises(ConfigError, match="fused"):
        build_run(tiny_config(photos, tmp_path, ["train.sync_free=true", "optim.impl=foreach"]))
    with pytest.raises(ConfigError, match="fp16"):
        build_run(tiny_config(photos, tmp_path, ["train.sync_free=true", "train.precision=fp16"]))
    with pytest.raises(ConfigError, match="CUDA"):
        build_run(tiny_config(photos, tmp_path, ["train.cuda_graph=true", "train.device=cpu"]))
    assert step_mode(tiny_config(photos, tmp_path, ["train.cuda_graph=auto"]), torch.device("cpu")) == "eager"

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


@pytest.mark.parametrize("saved_layout", ["contiguous", "channels_last"])
def test_resume_puts_adam_moments_in_the_parameters_memory_layout(photos, tmp_path, saved_layout):
    """A checkpoint written without channels-last (the CPU, torchrun) resumed with it (one GPU with graphs),
    and the other way round: the fused Adam needs each moment in its parameter's layout."""
    other = "contiguous" if saved_layout == "channels_last" else "channels_last"
    layouts = {"contiguous": "false", "channels_last": "true"}
    common = ["optim.impl=fused", "tg_d.enabled=false"]
    cfg = tiny_config(photos, tmp_path / "a", common + [f"train.channels_last={layouts[saved_layout]}"])
    run = build_run(cfg)
    (lr, hr), (lr2, hr2) = random_batches(cfg, 2)
    train_step(run, lr, hr)
    path = save_checkpoint(run, tmp_path / "a.pth")
    resumed = build_run(tiny_config(photos, tmp_path / "b", common + [f"train.channels_last={layouts[other]}"]))
    from sfd import checkpoint

    restore(resumed, checkpoint.load(path))
    four_d = 0
    for opt in resumed.optimizers.values():
        for p, state in opt.state.items():
            for k in ("exp_avg", "exp_avg_sq"):
                assert state[k].stride() == p.stride(), (k, p.shape)
            four_d += p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1
    assert four_d > 0  # some moments did change layout
    first = {k: v.clone() for k, v in run.optimizers["g"].state_dict()["state"][0].items()}
    torch.testing.assert_close(resumed.optimizers["g"].state_dict()["state"][0], first)  # the same values
    train_step(resumed, lr2, hr2)  # and the fused Adam steps with them


class _Sched:
    """A schedule that assigns a number to the learning rate, as torch's did before it filled tensors."""

    def __init__(self, opt):
        self.opt, self.n = opt, 0

    def step(self):
        self.n += 1
        for g in self.opt.param_groups:
            g["lr"] = 1e-3 * 0.5**self.n


@pytest.mark.parametrize("scheduler", ["multistep", "cosine_restart", "assigns a float"])
def test_a_tensor_learning_rate_stays_the_same_tensor_through_every_schedule(photos, tmp_path, scheduler):
    """A captured step reads the learning rate from one tensor: schedules must change that tensor's value."""
    from types import SimpleNamespace

    name = "multistep" if scheduler == "assigns a float" else scheduler
    cfg = tiny_config(photos, tmp_path, [f"optim.scheduler={name}", "optim.milestones=[2]", "optim.restart_period=3"])
    lr = torch.tensor(1e-3)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))], lr=lr, foreach=False)
    reference = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))], lr=1e-3, foreach=False)
    sched = _Sched(opt) if scheduler == "assigns a float" else build_scheduler(opt, cfg.optim)
    ref_sched = _Sched(reference) if scheduler == "assigns a float" else build_scheduler(reference, cfg.optim)
    run = SimpleNamespace(optimizers={"g": opt}, schedulers={"g": sched})
    seen = set()
    for _ in range(6):
        step_schedules(run)
        ref_sched.step()
        assert opt.param_groups[0]["lr"] is lr
        assert float(lr) == pytest.approx(reference.param_groups[0]["lr"], rel=1e-6)
        seen.add(round(float(lr), 9))
    assert len(seen) > 1  # the schedule did change the rate


class _FakeGraph:
    """CUDA calls stood in for on the CPU: ``capture`` runs the step once to make its outputs, ``replay``
    runs it again on the static inputs."""

    def __init__(self, fn, static):
        self.fn, self.static, self.out, self.released = fn, static, fn(*static), False

    def replay(self):
        for k, v in self.fn(*self.static).items():
            self.out[k].copy_(v)

    def reset(self):
        self.released = True


class _CountingStep(GraphedStep):
    """A graphed step whose step body is a stand-in that records each call (True: adversarial)."""

    def __init__(self, fail_capture: bool = False):
        self.said, self.calls, self.fail_capture, self.capturing = [], [], fail_capture, False
        super().__init__(torch.device("cpu"), warmup=2, say=self.said.append)

    def uncaptured(self, run, lr, hr, hr_real, adversarial):
        self.calls.append(adversarial)
        if self.fail_capture and self.capturing:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")
        return {"loss": (lr + hr + hr_real).sum() * (2 if adversarial else 1)}


@pytest.fixture
def fake_cuda_graphs(monkeypatch):
    import sfd.train.modes as modes

    made = []

    def capture(fn, *static, pool=None):
        graph = _FakeGraph(fn, static)
        made.append(graph)
        return graph, graph.out

    monkeypatch.setattr(modes, "on_side_stream", lambda fn, *args: fn(*args))
    monkeypatch.setattr(modes, "capture", capture)
    return made


def _batch(n, size=2):
    return [torch.full((size,), float(i + n)) for i in range(3)]


def test_graphed_step_warms_up_captures_replays_and_frees_the_finished_phase(fake_cuda_graphs):
    step = _CountingStep()
    losses = [step(None, *_batch(n), adversarial=n >= 4)["loss"] for n in range(8)]
    assert losses == [torch.tensor(2.0 * (3 + 3 * n)) * (2 if n >= 4 else 1) for n in range(8)]
    assert step.calls == [False] * 5 + [True] * 5  # per phase: 2 eager, the capture, 2 replays
    pixel, adversarial = fake_cuda_graphs
    assert pixel.released and not adversarial.released  # the pixel phase's graph went when its phase ended
    assert set(step.graphs) == {True} and not step.said


def test_graphed_step_refuses_a_batch_of_another_shape(fake_cuda_graphs):
    step = _CountingStep()
    for n in range(3):
        step(None, *_batch(n), adversarial=True)
    with pytest.raises(ValueError, match=r"shape \(3,\).*captured step's \(2,\)"):
        step(None, *_batch(0, size=3), adversarial=True)


def test_a_failed_capture_is_one_line_and_the_run_goes_on_without_graphs(fake_cuda_graphs, monkeypatch):
    import sfd.train.modes as modes

    step = _CountingStep(fail_capture=True)

    def failing_capture(fn, *static, pool=None):
        step.capturing = True
        try:
            return _FakeGraph(fn, static), None
        finally:
            step.capturing = False

    monkeypatch.setattr(modes, "capture", failing_capture)
    losses = [float(step(None, *_batch(n), adversarial=True)["loss"]) for n in range(6)]
    assert losses == [2.0 * (3 + 3 * n) * 2 for n in range(6)]  # every step ran, the failed capture's too
    assert step.failed and not step.graphs
    assert len(step.said) == 1 and "could not be captured (CUDA error: operation not permitted" in step.said[0]
    assert step.calls == [True] * 2 + [True] + [True] * 4  # 2 warm-up, the failed capture, then 4 eager steps


def _poison(monkeypatch, at: int):
    """A NaN in the LR batch of iteration ``at``, fed through the real loop's ``make_pair``."""
    import sfd.train.loop as loop

    real = loop.make_pair

    def make_pair(run, batch):
        lr, hr, hr_real = real(run, batch)
        if run.iteration == at:
            lr = lr.clone()
            lr[0, 0, 0, 0] = float("nan")
        return lr, hr, hr_real

    monkeypatch.setattr(loop, "make_pair", make_pair)


def _log(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _losses_agree(log_a, log_b, atol):
    assert [r["iter"] for r in log_a] == [r["iter"] for r in log_b]
    for a, b in zip(log_a, log_b):
        keys = [k for k in a if k.startswith(("l_", "lr_")) and k in b]
        assert keys and all(a[k] == pytest.approx(b[k], abs=atol, rel=atol) for k in keys), (a["iter"], a, b)


def _checkpoints_agree(path_a, path_b, atol):
    a, b = torch.load(path_a, weights_only=True), torch.load(path_b, weights_only=True)
    for part in ("generator", "generator_ema"):
        assert all(torch.allclose(a[part][k], b[part][k], atol=atol) for k in a[part]), part
    for name, sd in a["discriminators"].items():
        assert all(torch.allclose(sd[k], b["discriminators"][name][k], atol=atol) for k in sd), name


# Over 8 steps with the real loader (2 workers): the pixel warm-up -> adversarial switch at 2, the learning rate
# halved at 5 (on CUDA: after the adversarial capture), gradient clipping on, a NaN at 4, a save + resume at 3.
SCENARIO = [
    "data.num_workers=2",
    "train.pixel_warmup=2",
    "optim.milestones=[5]",
    "optim.grad_clip=0.05",
    "optim.impl=fused",
    "train.save_every=100",
    "train.channels_last=false",
]


def test_sync_free_run_resumed_midway_equals_the_eager_run_through_the_real_loop(photos, tmp_path, monkeypatch):
    """What the CPU can check of the CUDA test below: the sync-free step (the one graphs capture) against
    the truly eager one, in real ``train`` runs fed by the loader's workers."""
    _poison(monkeypatch, at=4)
    eager = tiny_config(photos, tmp_path / "e", SCENARIO + ["train.sync_free=false"], iterations=8)
    free = SCENARIO + ["train.sync_free=true"]
    last_eager = train(eager, progress=False)
    first = train(tiny_config(photos, tmp_path / "s", free, iterations=3), progress=False)
    last_free = train(None, resume=str(first), overrides=["train.iterations=8"], progress=False)
    log_e, log_s = _log(tmp_path / "e" / eager.name), _log(tmp_path / "s" / eager.name)
    assert any("bad_steps" in r for r in log_e) and any("bad_steps" in r for r in log_s)
    _losses_agree([r for r in log_e if r["iter"] != 5], [r for r in log_s if r["iter"] != 5], atol=1e-5)
    _checkpoints_agree(last_eager, last_free, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_graphed_runs_equal_the_truly_eager_run_through_the_real_loop(photos, tmp_path, monkeypatch):
    """Eager (train.cuda_graph=false, sync_free=false) against graphed (true), every other switch equal, through
    the real loader with workers and pinned memory; 12 steps so that each phase captures (3 eager steps, then
    the capture): pixel phase captured at 3, adversarial from 5, captured at 8, the LR milestone at 10 (after
    the capture), a NaN at 9 (a replay), and a graphed run resumed at 6 equal to the uninterrupted one."""
    _poison(monkeypatch, at=9)
    scenario = [s for s in SCENARIO if not s.startswith(("train.pixel_warmup", "optim.milestones"))]
    scenario += ["train.pixel_warmup=5", "optim.milestones=[10]", "train.device=cuda"]
    runs = {
        "eager": scenario + ["train.cuda_graph=false", "train.sync_free=false"],
        "graphed": scenario + ["train.cuda_graph=true"],
    }
    last = {k: train(tiny_config(photos, tmp_path / k, v, iterations=12), progress=False) for k, v in runs.items()}
    first = train(tiny_config(photos, tmp_path / "r", runs["graphed"], iterations=6), progress=False)
    resumed = train(None, resume=str(first), overrides=["train.iterations=12"], progress=False)
    name = tiny_config(photos, tmp_path, runs["eager"]).name
    logs = {k: _log(tmp_path / k / name) for k in ("eager", "graphed", "r")}
    skip_nan = lambda log: [r for r in log if r["iter"] != 10]  # noqa: E731 (the NaN step's logged losses)
    _losses_agree(skip_nan(logs["eager"]), skip_nan(logs["graphed"]), atol=1e-4)
    _losses_agree(skip_nan(logs["graphed"]), skip_nan(logs["r"]), atol=1e-4)
    _checkpoints_agree(last["eager"], last["graphed"], atol=1e-4)
    _checkpoints_agree(last["graphed"], resumed, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are detected by CUDA's sync debug mode")
def test_sync_free_step_never_waits_for_the_gpu(photos, tmp_path):
    cfg = tiny_config(photos, tmp_path, ["train.device=cuda", "train.sync_free=true", "train.cuda_graph=false"])
    run = build_run(cfg)
    (lr, hr), (lr2, hr2) = random_batches(cfg, 2)
    train_step(run, lr.cuda(), hr.cuda())  # the first step creates Adam's states
    lr2, hr2 = lr2.cuda(), hr2.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(run, lr2, hr2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
