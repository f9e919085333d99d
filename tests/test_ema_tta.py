"""Weight averaging (EMA), flip test-time augmentation, the train_flops log, and resume
staying bit-exact with every knob on (EMA, dropout, stochastic depth, patch dropout, GAP,
sine-cosine)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from minivit import ViT
from minivit.checkpoint import load_checkpoint, load_model, save_checkpoint
from minivit.data.synthetic import make_synthetic
from minivit.ema import EMA
from minivit.errors import CheckpointError, ConfigError, TrainingInterrupted
from minivit.evaluate import evaluate
from minivit.train import TrainSettings, train
from minivit.tta import hflip, predict_logits_tta, shift

from conftest import perturbed_model, tiny_config

CFG = tiny_config(dim=16, heads=2, mlp_dim=32, num_classes=4, classifier="gap",
                  pos_embed="sincos2d", dropout=0.1, drop_path=0.2, patch_keep=0.75)
DATA = make_synthetic(n_train=96, n_test=32, image_size=8, num_classes=4, seed=0)
FAST = dict(batch_size=16, warmup_epochs=0.5, backend="numpy", lr=2e-3, crop_padding=1,
            mixup=0.2, ema_decay=0.9)
QUIET = dict(progress=False, log=lambda *a: None)


# ---------------------------------------------------------------------- EMA
def test_ema_formula_matches_closed_form():
    """After k updates with weights θ_1 … θ_k: θ̄ = β^k θ_0 + Σ_t (1−β) β^(k−t) θ_t."""
    m = perturbed_model(tiny_config(), seed=0)
    beta = 0.8
    ema = EMA(m, beta)
    rng = np.random.default_rng(0)
    thetas = [m.state_dict()]
    for _ in range(5):
        m.load_params({k: v + rng.standard_normal(v.shape) for k, v in m.state_dict().items()})
        thetas.append(m.state_dict())
        ema.update()
    k = len(thetas) - 1
    for n in m.params:
        want = beta ** k * thetas[0][n] + sum((1 - beta) * beta ** (k - t) * thetas[t][n]
                                              for t in range(1, k + 1))
        np.testing.assert_allclose(ema.params[n], want, rtol=1e-12, atol=1e-14, err_msg=n)
    # the average is a separate copy: the raw weights are the last θ
    np.testing.assert_array_equal(m.params["head.weight"], thetas[-1]["head.weight"])


@pytest.mark.parametrize("kind", ["vit", "hybrid"])
def test_ema_swapped_evaluates_the_average_and_restores(kind):
    # Inside the block: exactly the model built from the averaged weights. A hybrid's
    # encoder reads model.vit.params, so the swap must reach it too (BN statistics are
    # the raw model's); afterwards the raw weights are back, untouched.
    if kind == "vit":
        cls, m = ViT, perturbed_model(tiny_config(), seed=1)
    else:
        from test_conv_ops import perturbed, tiny_hybrid_config
        from minivit.hybrid import HybridViT
        cls, m = HybridViT, perturbed(HybridViT(tiny_hybrid_config(trunk="pool"),
                                                dtype="float64"))
    ema = EMA(m, 0.5)
    raw = m.state_dict()
    ema.params = {k: v * 0.5 for k, v in ema.params.items()}
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3))
    with ema.swapped():
        inside = m.forward(x)
    averaged = {k: (v * 0.5 if k in m.params else v) for k, v in raw.items()}
    np.testing.assert_array_equal(inside, cls(m.config, dtype="float64",
                                              params=averaged).forward(x))
    np.testing.assert_array_equal(m.forward(x), cls(m.config, dtype="float64",
                                                    params=raw).forward(x))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, raw[k])


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, True])
def test_ema_bad_decay(decay):
    with pytest.raises(ConfigError, match="EMA decay must lie in"):
        EMA(perturbed_model(tiny_config()), decay)
    if decay != 0.0:
        with pytest.raises(ConfigError, match="ema decay must lie in"):
            TrainSettings(ema_decay=decay).validate()


def test_ema_on_cuda_refused():
    with pytest.raises(ConfigError, match="ema_decay is not supported on the cuda backend yet"):
        TrainSettings(ema_decay=0.9, backend="cuda").validate()


# ---------------------------------------------------------------------- training
def test_resume_with_ema_and_every_knob_is_bit_identical(tmp_path):
    """Stopped after epoch 1 of 3 (as a crash would), then resumed: the raw weights, the
    weight average and every logged number equal the uninterrupted run's (the dropout
    masks of each step are keyed by the restored step count)."""
    straight = train(CFG, data=DATA, out_dir=tmp_path / "a", epochs=3, **FAST, **QUIET)
    s = TrainSettings(epochs=3, **FAST)
    train(CFG, data=DATA, out_dir=tmp_path / "b", settings=s, stop_after_epochs=1, **QUIET)
    resumed = train(CFG, data=DATA, out_dir=tmp_path / "b", resume=True, **QUIET)
    for k, v in straight["model"].state_dict().items():
        assert np.array_equal(v, resumed["model"].state_dict()[k]), k
    ea, eb = straight["ema"].state_dict(), resumed["ema"].state_dict()
    for k in ea:
        assert np.array_equal(ea[k], eb[k]), k
    # the average differs from the raw weights (it is really kept)
    assert not np.array_equal(ea["head.weight"], straight["model"].state_dict()["head.weight"])
    ha = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
    hb = [json.loads(l) for l in open(tmp_path / "b" / "metrics.jsonl")]
    for key in ("test_acc", "ema_test_acc", "ema_test_loss", "train_loss", "train_flops"):
        assert [h[key] for h in ha] == [h[key] for h in hb], key
    # checkpoint: ema/ keys beside param/ keys, loadable as a model
    ck = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    assert set(ck["ema"]) == set(ck["params"])
    m, _ = load_model(tmp_path / "a" / "checkpoint.npz", ema=True, dtype="float32")
    np.testing.assert_array_equal(m.state_dict()["head.weight"], ea["head.weight"])
    # the logged EMA accuracy is that of the saved average
    ev = evaluate(m, DATA["x_test"], DATA["y_test"])
    assert ev["acc"] == ha[-1]["ema_test_acc"]


def test_resume_mid_epoch_with_every_knob_is_bit_identical(tmp_path, monkeypatch):
    """SIGINT in the middle of epoch 1 (step 4 of 6): the checkpoint holds the batch
    position, the step (which keys the dropout masks) and the weight average."""
    import os
    import signal

    from minivit.optim import AdamW
    straight = train(CFG, data=DATA, out_dir=tmp_path / "a", epochs=2, **FAST, **QUIET)
    real_step = AdamW.step

    def step_then_interrupt(self, lr=None):
        real_step(self, lr)
        if self.step_count == 4:
            os.kill(os.getpid(), signal.SIGINT)      # the trainer's handler sets its flag
    monkeypatch.setattr(AdamW, "step", step_then_interrupt)
    with pytest.raises(TrainingInterrupted) as e:
        train(CFG, data=DATA, out_dir=tmp_path / "b", epochs=2, **FAST, **QUIET)
    assert e.value.signum == signal.SIGINT and e.value.result["history"] == []
    monkeypatch.setattr(AdamW, "step", real_step)
    resumed = train(CFG, data=DATA, out_dir=tmp_path / "b", resume=True, **QUIET)
    for k, v in straight["model"].state_dict().items():
        assert np.array_equal(v, resumed["model"].state_dict()[k]), k
    for k, v in straight["ema"].state_dict().items():
        assert np.array_equal(v, resumed["ema"].state_dict()[k]), k


def test_train_flops_logged_on_every_line(tmp_path):
    r = train(CFG, data=DATA, out_dir=tmp_path, epochs=2, eval_every=2,
              **{**FAST, "ema_decay": 0.0}, **QUIET)
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    # patch dropout: the encoder of a training step runs on K = 3 of the N = 4 tokens
    assert (CFG.train_num_tokens, CFG.num_tokens) == (3, 4)
    per_step = 16 * 3 * CFG.flops_per_image(tokens=3)
    assert per_step < 16 * 3 * CFG.flops_per_image()
    assert [row["train_flops"] for row in rows] == [6 * per_step, 12 * per_step]
    assert rows[0]["test_acc"] is None and "ema_test_acc" not in rows[0]
    assert r["ema"] is None


def test_full_token_epochs_switch_patch_dropout_off_at_the_end(tmp_path, monkeypatch):
    """The last full_token_epochs epochs train on every patch token: their steps draw no
    kept positions, their train_flops count all N tokens, the epochs before them are the
    patch-dropout run's exactly, and a run stopped at the switch resumes bit-exactly."""
    kw = dict(epochs=3, **{**FAST, "ema_decay": 0.0}, **QUIET)
    kept = []                                        # per training step: patch dropout on?
    real = ViT.begin_forward

    def spy(self, batch, keep_attention=False, rng_key=None, first_row=0):
        real(self, batch, keep_attention, rng_key, first_row)
        if rng_key is not None:
            kept.append("keep" in self._masks)
    monkeypatch.setattr(ViT, "begin_forward", spy)
    a = train(CFG, data=DATA, out_dir=tmp_path / "a", full_token_epochs=1, **kw)
    assert kept == [True] * 12 + [False] * 6         # 6 steps per epoch
    monkeypatch.setattr(ViT, "begin_forward", real)
    rows = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
    p = 16 * 3 * CFG.flops_per_image(tokens=CFG.train_num_tokens)
    f = 16 * 3 * CFG.flops_per_image()
    assert p < f and f == 16 * CFG.train_flops_per_image(full_tokens=True)
    assert [row["train_flops"] for row in rows] == [6 * p, 12 * p, 12 * p + 6 * f]
    # before the switch: the patch-dropout run; after it: another model
    b = train(CFG, data=DATA, **kw)
    assert [h["train_loss"] for h in a["history"][:2]] == [h["train_loss"] for h in b["history"][:2]]
    assert a["history"][2]["train_loss"] != b["history"][2]["train_loss"]
    assert not np.array_equal(a["model"].state_dict()["head.weight"],
                              b["model"].state_dict()["head.weight"])
    # stopped at the switch, resumed: bit-identical; the flag is part of the saved settings
    train(CFG, data=DATA, out_dir=tmp_path / "c", full_token_epochs=1, stop_after_epochs=2, **kw)
    c = train(CFG, data=DATA, out_dir=tmp_path / "c", resume=True, **QUIET)
    for k, v in a["model"].state_dict().items():
        assert np.array_equal(v, c["model"].state_dict()[k]), k
    assert c["settings"].full_token_epochs == 1
    # extended before the switch: the full-token epochs move to the new end; after it: refused
    train(CFG, data=DATA, out_dir=tmp_path / "d", full_token_epochs=1, stop_after_epochs=1, **kw)
    d = train(CFG, data=DATA, out_dir=tmp_path / "d", resume=True, epochs=4, **QUIET)
    assert [h["train_flops"] for h in d["history"]] == [6 * p, 12 * p, 18 * p, 18 * p + 6 * f]
    with pytest.raises(ConfigError, match=r"^--resume: the run's last 1 full_token_epochs began "
                                          r"at epoch 3, so it can no longer be extended$"):
        train(CFG, data=DATA, out_dir=tmp_path / "a", resume=True, epochs=4, **QUIET)


def test_full_token_epochs_refusals_and_budget():
    from minivit.models import epoch_flops, epochs_for_budget
    with pytest.raises(ConfigError, match=r"^full_token_epochs must be an int in \[0, epochs=3\], got 4$"):
        TrainSettings(epochs=3, full_token_epochs=4).validate()
    with pytest.raises(ConfigError, match="got -1"):
        TrainSettings(epochs=3, full_token_epochs=-1).validate()
    with pytest.raises(ConfigError, match=r"^full_token_epochs=1 switches patch dropout off .* "
                                          r"this model has none \(its patch_keep is 1"):
        train(CFG.replace(patch_keep=1.0), data=DATA, epochs=2, full_token_epochs=1,
              **{**FAST, "ema_decay": 0.0}, **QUIET)
    # an equal-compute schedule: K full-token epochs cost more, so fewer epochs fit
    keep, full = epoch_flops(CFG, 96, 16), epoch_flops(CFG, 96, 16, full_tokens=True)
    budget = 10 * keep
    assert epochs_for_budget(budget, CFG, 96, 16) == 10
    want = 2 + (budget - 2 * full) / keep
    assert epochs_for_budget(budget, CFG, 96, 16, full_token_epochs=2) == round(want) < 10
    assert epochs_for_budget(budget, CFG, 96, 16, within=True, full_token_epochs=2) == int(want)
    assert epochs_for_budget(keep, CFG, 96, 16, full_token_epochs=3) == 3   # at least K


def test_full_token_lr_restarts_the_schedule_at_the_full_token_epochs(tmp_path):
    """full_token_lr: the epochs before the full-token ones follow the run's schedule
    exactly; from the first full-token step the rate starts again at full_token_lr and
    decays (cosine) to min_lr at the last step; the run resumes bit-exactly across it."""
    from minivit.optim import LRSchedule
    s = LRSchedule(1.0, 100, 10, "cosine", min_lr=0.1, restart=(80, 0.5))
    plain = LRSchedule(1.0, 100, 10, "cosine", min_lr=0.1)
    assert [s(i) for i in range(80)] == [plain(i) for i in range(80)]
    assert s(80) == pytest.approx(0.5) and s(90) == pytest.approx(0.1 + 0.4 * 0.5)
    assert s(100) == pytest.approx(0.1) and plain(80) == pytest.approx(0.2053, abs=1e-4)
    assert LRSchedule(1.0, 100, 0, "linear", restart=(50, 0.4))(75) == pytest.approx(0.2)
    assert LRSchedule(1.0, 100, 0, "constant", restart=(50, 0.4))(99) == 0.4
    with pytest.raises(ConfigError, match=r"^the restart step must lie in \[10, 100\), got 5$"):
        LRSchedule(1.0, 100, 10, restart=(5, 0.5))

    kw = dict(epochs=3, full_token_epochs=1, **{**FAST, "ema_decay": 0.0}, **QUIET)
    a = train(CFG, data=DATA, out_dir=tmp_path / "a", full_token_lr=1e-3, **kw)
    b = train(CFG, data=DATA, **kw)
    # 6 steps per epoch, a 3-step warm-up; history holds each epoch's last step's rate
    restarted = LRSchedule(2e-3, 18, 3, "cosine", 1e-5, restart=(12, 1e-3))
    plain = LRSchedule(2e-3, 18, 3, "cosine", 1e-5)
    assert [h["lr"] for h in a["history"]] == [restarted(i) for i in (5, 11, 17)]
    assert [h["lr"] for h in b["history"]] == [plain(i) for i in (5, 11, 17)]
    assert restarted(12) == pytest.approx(1e-3) and restarted(17) > 2 * plain(17)
    assert a["history"][1]["train_loss"] == b["history"][1]["train_loss"]
    assert a["history"][2]["train_loss"] != b["history"][2]["train_loss"]
    train(CFG, data=DATA, out_dir=tmp_path / "c", full_token_lr=1e-3, stop_after_epochs=2, **kw)
    c = train(CFG, data=DATA, out_dir=tmp_path / "c", resume=True, **QUIET)
    for k, v in a["model"].state_dict().items():
        assert np.array_equal(v, c["model"].state_dict()[k]), k
    assert c["settings"].full_token_lr == 1e-3
    # a plain run stopped before its full-token epochs may take full_token_lr on resume
    # (it acts on no step taken): the same model as the run started with it
    train(CFG, data=DATA, out_dir=tmp_path / "d", stop_after_epochs=2, **kw)
    said = []
    d = train(CFG, data=DATA, out_dir=tmp_path / "d", resume=True, full_token_lr=1e-3,
              progress=False, log=said.append)
    for k, v in a["model"].state_dict().items():
        assert np.array_equal(v, d["model"].state_dict()[k]), k
    assert "resume: full_token_lr None → 0.001 (it acts from epoch 3 on, which has not begun)" in said
    # once they have begun it may not change; other settings never may
    with pytest.raises(ConfigError, match=r"--full-token-lr \(run: 0.001, now: 0.0005\), and "
                                          r"its full-token epochs began at epoch 3, so they "
                                          r"can no longer change$"):
        train(CFG, data=DATA, out_dir=tmp_path / "d", resume=True, full_token_lr=5e-4, **QUIET)
    train(CFG, data=DATA, out_dir=tmp_path / "e", stop_after_epochs=2, **kw)
    with pytest.raises(ConfigError, match=r"other settings: --lr \(run: 0.002, now: 0.001\)\."):
        train(CFG, data=DATA, out_dir=tmp_path / "e", resume=True, lr=1e-3, **QUIET)
    kw["full_token_epochs"] = 0                      # a run with none: nothing to restart
    train(CFG, data=DATA, out_dir=tmp_path / "f", stop_after_epochs=1, **kw)
    with pytest.raises(ConfigError, match=r"^full_token_lr=0.001 restarts .* but "
                                          r"full_token_epochs is 0"):
        train(CFG, data=DATA, out_dir=tmp_path / "f", resume=True, full_token_lr=1e-3, **QUIET)


@pytest.mark.parametrize("kw,needle", [
    (dict(full_token_lr=1e-3), r"^full_token_lr=0.001 restarts the learning rate at the "
                               r"full-token epochs, but full_token_epochs is 0 \(e.g. "
                               r"--full-token-epochs 4\)$"),
    (dict(full_token_epochs=1, full_token_lr=1e-6),
     r"^full_token_lr must be a number >= min_lr=1e-05, got 1e-06$"),
    (dict(full_token_epochs=1, full_token_lr="high"), r"got 'high'$"),
    (dict(full_token_epochs=2, full_token_lr=1e-4, warmup_epochs=2.5),
     r"^full_token_lr: the full-token epochs \(from epoch 2\) begin inside the 2.5-epoch "
     r"warm-up$"),
])
def test_full_token_lr_refusals(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainSettings(epochs=3, **kw).validate()


def test_dropout_changes_training_and_is_seeded(tmp_path):
    """Dropout really acts in training steps (a run differs from the dropout-free one),
    and two runs with the same seed are identical."""
    kw = dict(epochs=1, **{**FAST, "ema_decay": 0.0, "mixup": 0.0}, **QUIET)
    a = train(CFG, data=DATA, **kw)["model"].state_dict()
    b = train(CFG, data=DATA, **kw)["model"].state_dict()
    c = train(CFG.replace(dropout=0.0, drop_path=0.0), data=DATA, **kw)["model"].state_dict()
    d = train(CFG.replace(patch_keep=1.0), data=DATA, **kw)["model"].state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["head.weight"], c["head.weight"])
    assert not np.array_equal(a["head.weight"], d["head.weight"])


def test_resume_without_saved_average_is_refused(tmp_path):
    train(CFG, data=DATA, out_dir=tmp_path, epochs=1, **{**FAST, "ema_decay": 0.0}, **QUIET)
    ck = load_checkpoint(tmp_path / "checkpoint.npz")
    meta = dict(ck["meta"])
    meta["settings"] = {**meta["settings"], "ema_decay": 0.9, "epochs": 2}
    m = ViT(ck["config"], params=ck["params"])
    from minivit.optim import AdamW
    opt = AdamW(m)
    opt.load_state_dict(ck["optim"])
    save_checkpoint(tmp_path / "checkpoint.npz", m, opt,
                    **{k: v for k, v in meta.items() if k not in ("format", "config", "dtype")})
    with pytest.raises(CheckpointError, match="holds none"):
        train(CFG, data=DATA, out_dir=tmp_path, resume=True, **QUIET)
    with pytest.raises(CheckpointError, match="holds no weight average"):
        load_model(tmp_path / "checkpoint.npz", ema=True)


def test_cli_train_with_every_knob(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "minivit.cli", "train", "--synthetic", "--limit-train", "64",
           "--limit-test", "32", "--image-size", "8", "--patch-size", "4", "--dim", "16",
           "--depth", "2", "--heads", "2", "--mlp-dim", "32", "--classifier", "gap",
           "--pos-embed", "sincos2d", "--dropout", "0.1", "--drop-path", "0.1", "--patch-keep", "0.5",
           "--attn-init", "mimetic", "--ema-decay", "0.9", "--full-token-epochs", "1", "--epochs", "1",
           "--batch-size", "16", "--backend", "numpy",
           "--no-progress", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ck = load_checkpoint(out / "checkpoint.npz")
    c = ck["config"]
    assert (c.classifier, c.pos_embed, c.dropout, c.drop_path, c.patch_keep, c.attn_init) == \
        ("gap", "sincos2d", 0.1, 0.1, 0.5, "mimetic")
    assert ck["meta"]["settings"]["ema_decay"] == 0.9 and ck["ema"]
    assert ck["meta"]["settings"]["full_token_epochs"] == 1
    row = json.loads(open(out / "metrics.jsonl").readline())
    assert row["train_flops"] == 4 * 16 * c.train_flops_per_image(full_tokens=True)   # K = 1
    assert "ema_test_acc" in row
    # the final line gives the moving average's figure beside the final weights'
    last = [json.loads(x) for x in open(out / "metrics.jsonl")][-1]
    assert r.stdout.rstrip().endswith(
        f"final test accuracy on the synthetic set (a pipeline check, not a CIFAR-10 result): "
        f"{100 * last['test_acc']:.2f}%; moving average of the weights "
        f"{100 * last['ema_test_acc']:.2f}%  (outputs in {out}/)"), r.stdout[-400:]
    bad = subprocess.run(cmd[:-2] + ["--dropout", "1.5", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "dropout must be a rate in [0, 1), got 1.5" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = subprocess.run(cmd[:-2] + ["--patch-keep", "0", "--out", str(tmp_path / "y")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "patch_keep must be a fraction in (0, 1], got 0.0" in bad.stderr


def test_cli_stop_after_epochs_then_finish_copies_with_other_full_token_lr(tmp_path):
    """The README's procedure for trying final phases: a run stopped before its
    full-token epochs (--stop-after-epochs), copied, and finished with --resume
    --full-token-lr X is the run started with --full-token-lr X, bit for bit."""
    import shutil
    base = [sys.executable, "-m", "minivit.cli", "train", "--synthetic", "--limit-train", "64",
            "--limit-test", "32", "--image-size", "8", "--patch-size", "4", "--dim", "16",
            "--depth", "1", "--heads", "2", "--mlp-dim", "32", "--patch-keep", "0.5",
            "--full-token-epochs", "1", "--epochs", "2", "--warmup-epochs", "0.5",
            "--batch-size", "16", "--backend", "numpy", "--no-progress"]
    run = lambda *a: subprocess.run([*base, *a], capture_output=True, text=True, timeout=300)
    r = run("--stop-after-epochs", "1", "--out", str(tmp_path / "trunk"))
    assert r.returncode == 0, r.stderr
    assert f"stopped after epoch 1 of 2; checkpoint in {tmp_path / 'trunk' / 'checkpoint.npz'}, " \
           f"continue with --resume" in r.stdout
    assert r.stdout.rstrip().endswith(f"not finished: epoch 1 of 2 (outputs in {tmp_path / 'trunk'}/)")
    assert load_checkpoint(tmp_path / "trunk" / "checkpoint.npz")["meta"]["epoch"] == 1
    shutil.copytree(tmp_path / "trunk", tmp_path / "branch")
    r = subprocess.run([sys.executable, "-m", "minivit.cli", "train", "--out",
                        str(tmp_path / "branch"), "--resume", "--full-token-lr", "1e-3",
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resume: full_token_lr None → 0.001 (it acts from epoch 2 on" in r.stdout
    r = run("--full-token-lr", "1e-3", "--out", str(tmp_path / "direct"))
    assert r.returncode == 0, r.stderr
    a = load_checkpoint(tmp_path / "branch" / "checkpoint.npz")
    b = load_checkpoint(tmp_path / "direct" / "checkpoint.npz")
    assert a["meta"]["settings"]["full_token_lr"] == 1e-3 and a["meta"]["epoch"] == 2
    for k, v in b["params"].items():
        assert np.array_equal(v, a["params"][k]), k
    bad = run("--stop-after-epochs", "0", "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "stop_after_epochs must be an int >= 1, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr


# ---------------------------------------------------------------------- TTA
def test_flip_tta_is_mean_of_image_and_mirror_logits():
    m = perturbed_model(tiny_config(classifier="gap"), seed=2)
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 3))
    flipped = x[:, :, ::-1, :]
    assert np.array_equal(hflip(x)[1, 2, 0], x[1, 2, 7])
    want = (m.forward(x) + m.forward(flipped.copy())) / 2
    np.testing.assert_allclose(predict_logits_tta(m, x, "flip"), want, rtol=1e-14)
    np.testing.assert_array_equal(predict_logits_tta(m, x, "none"), m.forward(x))
    # a model with learned position embeddings is not flip-invariant: TTA changes logits
    assert not np.allclose(predict_logits_tta(m, x, "flip"), m.forward(x))
    with pytest.raises(ConfigError, match="tta must be one of"):
        predict_logits_tta(m, x, "rotate")


def test_shift_moves_content_and_reflects_the_border():
    x = np.random.default_rng(1).standard_normal((2, 5, 6, 3))
    down_right = shift(x, 1, 1)
    assert down_right.shape == x.shape and down_right.flags.c_contiguous
    np.testing.assert_array_equal(down_right[:, 1:, 1:], x[:, :-1, :-1])
    np.testing.assert_array_equal(down_right[:, 0, 1:], x[:, 1, :-1])    # reflected row
    np.testing.assert_array_equal(down_right[:, 1:, 0], x[:, :-1, 1])    # reflected column
    up_left = shift(x, -1, -1)
    np.testing.assert_array_equal(up_left[:, :-1, :-1], x[:, 1:, 1:])
    np.testing.assert_array_equal(up_left[:, -1, :-1], x[:, -2, 1:])
    np.testing.assert_array_equal(shift(x, 0, 0), x)


def test_flip_shift_tta_weights_six_copies():
    """Half the weight on the image and its mirror, 1/8 on each of their four shifts."""
    m = perturbed_model(tiny_config(classifier="gap"), seed=3)
    x = np.random.default_rng(2).standard_normal((3, 8, 8, 3))
    mirror = hflip(x)
    copies = [shift(v, d, d) for v in (x, mirror) for d in (1, -1)]
    want = (0.25 * (m.forward(x) + m.forward(mirror))
            + 0.125 * sum(m.forward(c) for c in copies))
    got = predict_logits_tta(m, x, "flip-shift")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(got, predict_logits_tta(m, x, "flip"))
    # evaluate() batches the images; each batch goes through the same six copies
    m = perturbed_model(tiny_config(num_classes=4), seed=0)
    from minivit.data.augment import normalize
    xn = normalize(DATA["x_test"])
    r = evaluate(m, DATA["x_test"], DATA["y_test"], batch_size=7, tta="flip-shift")
    np.testing.assert_array_equal(r["predictions"],
                                  predict_logits_tta(m, xn, "flip-shift").argmax(axis=1))


def test_evaluate_with_flip_tta():
    m = perturbed_model(tiny_config(num_classes=4), seed=0)
    x, y = DATA["x_test"], DATA["y_test"]
    r = evaluate(m, x, y, batch_size=7, tta="flip")
    from minivit.data.augment import normalize
    xn = normalize(x)
    logits = (m.forward(xn) + m.forward(np.ascontiguousarray(xn[:, :, ::-1]))) / 2
    np.testing.assert_array_equal(r["predictions"], logits.argmax(axis=1))
    assert r["acc"] == float((logits.argmax(axis=1) == y).mean())


def test_cli_eval_flags_errors_are_one_line(tmp_path, capsys):
    """`minivit eval --ema` on a checkpoint without an average, `--tta rotate`: one line."""
    from minivit.cli import main
    m = perturbed_model(tiny_config(), dtype="float32")
    save_checkpoint(tmp_path / "ck.npz", m)
    rc = main(["eval", str(tmp_path / "ck.npz"), "--ema"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "holds no weight average" in err[0], err
    rc = main(["eval", str(tmp_path / "ck.npz"), "--tta", "rotate"])
    err = capsys.readouterr().err
    assert rc != 0 and "invalid choice: 'rotate'" in err and "Traceback" not in err
