"""Interrupted and faulty training (docs/reliability.md): NaN steps, signals, SIGKILL, locks,
checkpoint retention, corrupt checkpoints, a full disk, resuming without generator.pretrained."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import bundled_photo_dir, tiny_config, tiny_overrides

from sfd import checkpoint
from sfd.cli import main
from sfd.train import build_run, train, train_step
from sfd.train.guard import TrainingDiverged, grads_finite
from sfd.train.runlock import RunLock, RunLocked

REPO = Path(__file__).resolve().parents[1]
REALWORLD = ["data.degradation={queue_size: 4}", "tg_d.n_pairs=1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def _params(path) -> dict:
    """Every tensor that training changes: G, EMA, Ds, optimizer states, and the pair pool."""
    raw = torch.load(path, weights_only=True)
    flat = {f"g.{k}": v for k, v in raw["generator"].items()}
    flat.update({f"ema.{k}": v for k, v in raw["generator_ema"].items()})
    for name, sd in raw["discriminators"].items():
        flat.update({f"{name}.{k}": v for k, v in sd.items()})
    for name, opt in raw["optimizers"].items():
        for i, st in opt["state"].items():
            flat.update({f"opt.{name}.{i}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    for i, q in enumerate((raw.get("pair_pool") or {}).get("queue") or []):
        flat[f"pool.{i}"] = q
    return flat


def _assert_same(a_path, b_path, ignore=lambda key: False):
    a, b = _params(a_path), _params(b_path)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k]) and not ignore(k)]
    assert not differ, differ[:5]


# ---------------------------------------------------------------- NaN / Inf


def _batch(cfg):
    p, s = cfg.data.patch_size, cfg.generator.scale
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, p // s, p // s, generator=g), torch.rand(2, 3, p, p, generator=g)


def _state(run):
    # parameters, not buffers: spectral norm refines its power-iteration vectors on every forward
    return [t.detach().clone() for m in (run.generator, *run.discriminators.values()) for t in m.parameters()]


@pytest.mark.parametrize("fault", ["nan-input", "inf-gradient"])
def test_a_nan_step_changes_nothing_and_names_what_went_bad(photos, tmp_path, fault, one_thread):
    cfg = tiny_config(photos, tmp_path)
    run = build_run(cfg)
    lr, hr = _batch(cfg)
    if fault == "nan-input":
        lr[0, 0, 0, 0] = float("nan")
    else:  # the loss is finite, one gradient is not
        next(run.generator.parameters()).register_hook(lambda g: g * float("inf"))
    before = _state(run)
    train_step(run, lr, hr)
    if fault == "inf-gradient":
        assert run.bad == ["gradient of l_g_total"]
    else:
        assert run.bad and all(b.startswith("l_g_") and b.endswith("=nan") for b in run.bad), run.bad
    assert all(torch.equal(a, b) for a, b in zip(before, _state(run)))
    assert run.iteration == 1  # the batch is consumed: a resumed run stays in step


def _nan_after(monkeypatch, calls_ok: int, until: int | None = None):
    """Make the Feat-D adversarial G loss NaN from call ``calls_ok`` + 1 (to ``until``)."""
    import sfd.train.step as t

    real, count = t.g_adversarial_loss, {"n": 0}

    def fake(*args, **kw):
        count["n"] += 1
        loss = real(*args, **kw)
        bad = count["n"] > calls_ok and (until is None or count["n"] <= until)
        return loss * float("nan") if bad else loss

    monkeypatch.setattr(t, "g_adversarial_loss", fake)


@pytest.mark.parametrize(
    "bad, expected",
    [(None, True), (float("nan"), False), (float("inf"), False), (-float("inf"), False), (1e30, True)],
    ids=["finite", "nan", "inf", "-inf", "huge-but-finite"],
)
def test_grads_finite_is_exact(bad, expected):
    """NaN/Inf anywhere is caught; 1e30 overflows the fast norm check but is finite, so it passes."""
    params = [torch.nn.Parameter(torch.zeros(3, 4)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn_like(p)
    if bad is not None:
        params[1].grad[2, 3] = bad
    assert grads_finite(params) is expected


def test_isolated_nan_steps_are_skipped_counted_and_logged(photos, tmp_path, monkeypatch, capsys, one_thread):
    _nan_after(monkeypatch, 2, until=3)  # tg_d off: one call per step, so iteration 3 goes bad
    cfg = tiny_config(photos, tmp_path, ["tg_d.enabled=false", "train.save_every=1", "train.max_bad_steps=2"])
    final = train(cfg, progress=False)
    ckpts = final.parent
    log = [json.loads(line) for line in (ckpts.parent / "log.jsonl").read_text().splitlines()]
    assert [r.get("bad_steps") for r in log] == [None, None, 1.0, None]
    assert "iteration 3: skipped a step with a NaN/Inf l_g_feat_d=nan" in capsys.readouterr().out  # tqdm.write
    # the skipped step changed no weight (spectral norm's power-iteration vectors move on every forward)
    _assert_same(ckpts / "iter_00000002.pth", ckpts / "iter_00000003.pth", ignore=lambda k: k.endswith(("_u", "_v")))
    assert all(torch.isfinite(v).all() for v in _params(final).values())
    after = _params(ckpts / "iter_00000003.pth")
    assert any(not torch.equal(v, after[k]) for k, v in _params(final).items())  # and training went on


def test_consecutive_nan_steps_stop_with_the_last_good_checkpoint_intact(photos, tmp_path, monkeypatch, one_thread):
    _nan_after(monkeypatch, 2)  # iterations 3, 4, ... all bad
    cfg = tiny_config(
        photos, tmp_path, ["tg_d.enabled=false", "train.save_every=1", "train.max_bad_steps=2"], iterations=8
    )
    # a skipped step changes no weight, so the checkpoint written at iteration 3 holds iteration 2's weights
    with pytest.raises(TrainingDiverged, match=r"2 steps in a row.*iteration 4: l_g_feat_d=nan.*iter_00000003\.pth"):
        train(cfg, progress=False)
    good = checkpoint.list_checkpoints(tmp_path / cfg.name)
    assert [p.name for p in good] == ["iter_00000001.pth", "iter_00000002.pth", "iter_00000003.pth"]
    _assert_same(good[1], good[2], ignore=lambda k: k.endswith(("_u", "_v")))
    assert all(torch.isfinite(v).all() for v in _params(good[-1]).values())


# ---------------------------------------------------------------- checkpoints: retention, corruption, full disk


def test_keep_checkpoints_keeps_the_newest_and_the_marked(photos, tmp_path, one_thread):
    cfg = tiny_config(
        photos, tmp_path, ["train.save_every=1", "train.keep_checkpoints=2", "train.keep_every=3"], iterations=6
    )
    final = train(cfg, progress=False)
    assert [p.name for p in checkpoint.list_checkpoints(final.parents[1])] == [
        "iter_00000003.pth",
        "iter_00000005.pth",
        "iter_00000006.pth",
    ]


def test_prune_respects_keep_markers(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    for i in range(1, 6):
        (d / f"iter_{i:08d}.pth").write_bytes(b"x")
    (d / "iter_00000001.pth.keep").touch()
    deleted = checkpoint.prune(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["iter_00000002.pth", "iter_00000003.pth"]
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "iter_00000001.pth",
        "iter_00000004.pth",
        "iter_00000005.pth",
    ]
    assert checkpoint.prune(tmp_path, keep=None) == []


def test_resume_auto_skips_a_truncated_newest_checkpoint(photos, tmp_path, capsys, one_thread):
    extra = ["train.save_every=1"]
    ref = train(tiny_config(photos, tmp_path / "ref", extra), progress=False)
    cfg = tiny_config(photos, tmp_path / "run", extra)
    run_dir = tmp_path / "run" / cfg.name
    train(tiny_config(photos, tmp_path / "run", extra, iterations=3), progress=False)
    newest = run_dir / "checkpoints" / "iter_00000003.pth"
    newest.write_bytes(newest.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(checkpoint.CorruptCheckpoint, match=r"iter_00000003\.pth is corrupt: its bytes do not match"):
        checkpoint.load(newest)
    sums = checkpoint.checksum_path(newest)
    digest = sums.read_text()
    sums.unlink()  # without its checksum file, torch.load itself fails on the cut zip
    with pytest.raises(checkpoint.CorruptCheckpoint, match="not a readable checkpoint"):
        checkpoint.load(newest)
    sums.write_text(digest)
    final = train(cfg, resume="auto", progress=False)
    err = capsys.readouterr().out  # tqdm.write
    assert "iter_00000003.pth is corrupt" in err and "trying the previous" in err
    assert "resuming from" in err and "iter_00000002.pth" in err
    assert (newest.parent / "iter_00000003.pth.corrupt").exists()
    _assert_same(ref, final)


def test_flipped_bits_in_a_checkpoint_are_detected(tmp_path, capsys):
    state = {"generator": {"w": torch.arange(200_000, dtype=torch.float32)}, "config": {}, "iteration": 7}
    path = checkpoint.save(state, tmp_path / "c.pth")
    assert checkpoint.checksum_path(path).is_file() and checkpoint.load(path).iteration == 7
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the tensor data: torch.load alone reads it without complaint
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["iteration"] == 7
    with pytest.raises(checkpoint.CorruptCheckpoint, match=r"c\.pth is corrupt: its bytes do not match c\.pth\.sha256"):
        checkpoint.load(path)
    assert main(["inspect", str(path)]) == 1
    assert "c.pth is corrupt" in capsys.readouterr().err
    from sfd.checkpoint import load_model_file

    with pytest.raises(ValueError, match="c.pth is corrupt"):  # what sr, eval and export read models with
        load_model_file(path)
    # a copy edited on purpose (no checksum file beside it) loads
    edited = torch.load(tmp_path / "c.pth", weights_only=True)
    edited.pop("iteration")
    torch.save(edited, tmp_path / "edited.pth")
    assert checkpoint.load(tmp_path / "edited.pth").iteration == 0


def test_a_checkpoint_of_another_version_is_reported_not_set_aside(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    torch.save({"generator": {}, "config": {"no_such_key": 1}}, d / "iter_00000002.pth")
    torch.save({"generator": {}, "config": {}}, d / "iter_00000001.pth")
    with pytest.raises(checkpoint.CheckpointError, match="does not load with this sfd version"):
        checkpoint.load_latest_good(tmp_path)
    assert (d / "iter_00000002.pth").exists()  # only unreadable bytes are renamed *.corrupt


def test_a_full_disk_stops_training_and_keeps_the_previous_checkpoint(
    photos, tmp_path, monkeypatch, capsys, one_thread
):
    real_save, calls = torch.save, {"n": 0}

    def save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")  # part of the file written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    overrides = tiny_overrides(photos, tmp_path) + ["train.save_every=1", "data.val=null"]
    args = ["train", "--no-progress", "-c", str(REPO / "configs" / "classic_rrdb_x4.yml")]
    assert main(args + [a for o in overrides for a in ("--set", o)]) == 1
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "error" in x]
    assert len(line) == 1 and "No space left on device" in line[0] and "iter_00000001.pth" in line[0], err
    ckpts = tmp_path / "classic_rrdb_x4" / "checkpoints"
    # no temp file, no partial file
    assert sorted(p.name for p in ckpts.iterdir()) == ["iter_00000001.pth", "iter_00000001.pth.sha256"]
    assert checkpoint.load(ckpts / "iter_00000001.pth").iteration == 1


# ---------------------------------------------------------------- resume needs only the checkpoint


def test_resume_does_not_need_the_pretrained_file(photos, tmp_path, one_thread):
    cfg0 = tiny_config(photos, tmp_path)
    init = tmp_path / "psnr_init.pth"
    torch.save(build_run(cfg0).generator.state_dict(), init)
    extra = [f"generator.pretrained={init}"]
    ref = train(tiny_config(photos, tmp_path / "ref", extra), progress=False)
    train(tiny_config(photos, tmp_path / "run", extra, iterations=2), progress=False)
    init.rename(tmp_path / "moved.pth")  # the run's starting point is gone
    final = train(tiny_config(photos, tmp_path / "run", extra), resume="auto", progress=False)
    _assert_same(ref, final)
    assert str(init) in checkpoint.load(final).meta["generator"]["init"]


# Real-ESRGAN's crop structure, degraded in the trainer's process: the device path (on a GPU it is batched there).
CROP_IN_TRAINER = ["data.degradation.crop_pad_size=96", "data.degrade_in=trainer"]


# the loader's degradations also run in tests/test_pipeline.py: that variant is -m slow
@pytest.mark.parametrize(
    "extra", [pytest.param([], marks=pytest.mark.slow), CROP_IN_TRAINER], ids=["loader", "crop-in-trainer"]
)
def test_realworld_resume_restores_the_pair_pool_exactly(photos, tmp_path, one_thread, extra):
    ref = train(tiny_config(photos, tmp_path / "ref", REALWORLD + extra), progress=False)
    assert "pair_pool" in checkpoint.load(ref).extra
    train(tiny_config(photos, tmp_path / "run", REALWORLD + extra, iterations=2), progress=False)
    final = train(tiny_config(photos, tmp_path / "run", REALWORLD + extra), resume="auto", progress=False)
    _assert_same(ref, final)


# ---------------------------------------------------------------- one process per run folder


def test_a_second_train_on_the_same_run_folder_stops_at_once(photos, tmp_path, capsys):
    cfg = tiny_config(photos, tmp_path)
    with RunLock(tmp_path / cfg.name):
        overrides = tiny_overrides(photos, tmp_path) + ["data.val=null"]
        t0 = time.perf_counter()
        assert (
            main(
                ["train", "-c", str(REPO / "configs" / "classic_rrdb_x4.yml"), "--set", "name=" + cfg.name]
                + [a for o in overrides for a in ("--set", o)]
            )
            == 1
        )
        assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "is in use by another sfd train (pid" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / cfg.name / "checkpoints").exists()


def test_the_lock_of_a_killed_process_is_released(tmp_path):
    code = (
        f"from sfd.train.runlock import RunLock; import time; RunLock({str(tmp_path)!r}).acquire(); "
        "print('ok', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=_env())
    assert p.stdout.readline().strip() == b"ok"
    with pytest.raises(RunLocked, match=f"pid {p.pid}"):
        RunLock(tmp_path).acquire()
    p.kill()
    p.wait()
    RunLock(tmp_path).acquire().release()


# ---------------------------------------------------------------- signals and SIGKILL (subprocesses)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def _train_cmd(photos, out, iterations, extra=(), python=sys.executable):
    sets = tiny_overrides(photos, out, iterations) + ["train.save_every=1", "data.val=null", *extra]
    return [python, "-m", "sfd", "train", "--no-progress", "-c", "classic_rrdb_x4"] + [
        a for s in sets for a in ("--set", s)
    ]


def _wait_for(pred, proc, timeout=120.0):
    t0 = time.monotonic()
    while not pred():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.01)


# SIGINT's run is -m slow: the same handler as SIGTERM's, and Ctrl-C is tested with loader workers below
@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)
def test_sigint_and_sigterm_write_a_checkpoint_and_say_how_to_resume(photos, tmp_path, sig, sfd_python):
    ckpts = tmp_path / "classic_rrdb_x4" / "checkpoints"
    cmd = _train_cmd(photos, tmp_path, 1000, python=sfd_python)  # the signal reaches sfd through the forkserver
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (ckpts / "iter_00000001.pth").exists(), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {sig.name} at iteration" in err and "--resume" in err and "Traceback" not in err
    newest = checkpoint.find_latest(tmp_path / "classic_rrdb_x4")
    assert str(newest) in err and 1 <= checkpoint.load(newest).iteration < 1000


def test_ctrl_c_reaches_loader_workers_too_and_still_stops_cleanly(photos, tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole process group, DataLoader workers included."""
    ckpts = tmp_path / "classic_rrdb_x4" / "checkpoints"
    cmd = _train_cmd(photos, tmp_path, 1000, ["data.num_workers=1"])
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for(lambda: (ckpts / "iter_00000001.pth").exists(), proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "stopped by SIGINT at iteration" in err and "Traceback" not in err, err
    assert checkpoint.load(checkpoint.find_latest(tmp_path / "classic_rrdb_x4")).iteration >= 1


def _run_killed(cmd, env, when):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(when, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()


# A soak (46 s): -m slow. The suite keeps a SIGKILLed loader worker's bit-exact resume (tests/test_faults.py) and
# a SIGKILLed process's lock (below).
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["classic", "realworld"])
def test_sigkill_at_any_moment_then_resume_auto_is_bit_exact(photos, tmp_path, recipe):
    extra = REALWORLD if recipe == "realworld" else []
    n = 6
    ref = subprocess.run(_train_cmd(photos, tmp_path / "ref", n, extra), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run"
    ckpts = out / "classic_rrdb_x4" / "checkpoints"
    cmd = _train_cmd(photos, out, n, extra)
    # 1: killed just after checkpoint 2 was written
    _run_killed(cmd, _env(), lambda: (ckpts / "iter_00000002.pth").exists())
    # 2: killed in the middle of a checkpoint write (a slowed-down rename window)
    resume = cmd + ["--resume", "auto"]
    _run_killed(resume, _env(SFD_TEST_SAVE_DELAY="30"), lambda: any(ckpts.glob("iter_*.pth.tmp")))
    assert all(checkpoint.load(p) for p in checkpoint.list_checkpoints(out / "classic_rrdb_x4"))
    # 3: to the end
    done = subprocess.run(resume, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    name = f"iter_{n:08d}.pth"
    _assert_same(tmp_path / "ref" / "classic_rrdb_x4" / "checkpoints" / name, ckpts / name)


# ---------------------------------------------------------------- unreadable training images


def test_an_image_that_fails_to_decode_mid_training_is_skipped_and_counted(photos, tmp_path, one_thread):
    import io
    import shutil

    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(photos, data)
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, "PNG")
    (data / "aaa_cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # the header is fine
    cfg = tiny_config(data, tmp_path, ["data.batch_size=3"], iterations=2)  # 6 samples: every image once
    with pytest.warns(UserWarning, match=r"training data: skipping .*aaa_cut\.png: truncated or corrupt .*1 skipped"):
        final = train(cfg, progress=False)
    assert checkpoint.load(final).iteration == 2


def test_a_validation_image_that_fails_to_decode_is_skipped(photos, tmp_path, one_thread):
    import shutil

    val = tmp_path / "val"
    shutil.copytree(photos, val)
    (val / "aaa_empty.png").write_bytes(b"")
    cfg = tiny_config(photos, tmp_path, [f"data.val={val}", "data.val_max_images=2", "train.val_every=1"], iterations=1)
    with pytest.warns(UserWarning, match=r"validation: skipping .*aaa_empty\.png: empty file"):
        final = train(cfg, progress=False)
    log = [json.loads(line) for line in (final.parents[1] / "log.jsonl").read_text().splitlines()]
    assert log[-1]["val_psnr"] > 0  # from the readable image


@pytest.mark.slow
def test_soak_sigkill_at_random_moments_until_done_is_bit_exact(photos, tmp_path):
    """Soak: kill `sfd train` (classic, 8 iterations, a checkpoint each) at seeded random moments,
    resume each time with --resume auto, until it finishes; then compare with an uninterrupted run."""
    import random

    n = 8
    ref = subprocess.run(_train_cmd(photos, tmp_path / "ref", n), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run"
    resume = _train_cmd(photos, out, n) + ["--resume", "auto"]
    rng, kills = random.Random(11), 0
    for _ in range(6):  # start-up takes a few seconds: some kills land before the first step, some mid-write
        proc = subprocess.Popen(resume, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(2.0, 12.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0, proc.stderr.read()
        break
    done = subprocess.run(resume, env=_env(), capture_output=True, text=True)  # to the end (or nothing left)
    assert done.returncode == 0, done.stderr
    assert kills >= 1
    name = f"iter_{n:08d}.pth"
    _assert_same(
        tmp_path / "ref" / "classic_rrdb_x4" / "checkpoints" / name, out / "classic_rrdb_x4" / "checkpoints" / name
    )
