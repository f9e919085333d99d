"""Knob ablations at an equal training-compute budget, same seed (issue 15's search table,
and issue 16's for the hybrid ViT).

Each variant is the base recipe (today's ``make cifar10-60min`` settings) with some model
fields of the preset's family (ViTConfig: classifier, pos_embed, dropout, drop_path, dim,
depth, …; HybridConfig / ResNetConfig also stem_width, widths, depths, a tuple written
32/64/128) and/or training settings (TrainSettings: lr, batch_size, ema_decay,
rand_augment, crop_padding, …) changed. The budget is training compute, ``train_flops``
(matmul, conv and attention FLOPs, forward + backward = 3 × forward): each variant gets
the number of epochs that spends closest to ``--budget-epochs`` epochs of the *base*
model, or the most whole epochs *within* ``--budget-flops`` FLOP, so a cheaper model
(GAP: one token fewer; smaller D) may get more epochs; ``epochs=K`` in a variant fixes it. Every run's metrics.jsonl goes to runs/knob_ablation[_TAG]/
NAME/ (ignored by git); the table (final test accuracy, the EMA's, flip-TTA's and
flip-shift-TTA's, compute spent, wall time; the README's, ``readme_tables.ablation_table``)
is printed in markdown and written to
benchmarks/results/knob_ablation[_TAG].json. Runs that do not help stay in the table.

    python benchmarks/knob_ablation.py --budget-epochs 7 --data-dir ../shared/data \\
        --variant base --variant gap:classifier=gap --variant ema:ema_decay=0.999 \\
        --variant dp:drop_path=0.1 --variant sincos:pos_embed=sincos2d
    python benchmarks/knob_ablation.py --budget-epochs 14 --data-dir ../shared/data \\
        --tag 14ep --import-run base=runs/cifar10-30min --add   # a finished run joins
    python benchmarks/knob_ablation.py --preset hybrid-tiny --budget-flops 1.6e14 \\
        --tag hybrid_1.6e14 --data-dir ../shared/data \\
        --variant wide:stem_width=16,widths=32/64/128,depth=2,lr=4e-3,warmup_epochs=1,crop_padding=2
    python benchmarks/knob_ablation.py --synthetic --limit 64 --budget-epochs 1 \\
        --batch-size 16 --backend numpy --tag smoke       # a smoke test (seconds)

Wall times on the shared 2-core machine swing by 2× between days: compare accuracy at
equal ``train_flops``, and quote ``benchmarks/train_step.py`` of the same day beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_data import add_data_flags, load_data, write_json  # noqa: E402
from minivit.errors import ConfigError, MinivitError, TrainingInterrupted  # noqa: E402
from minivit.evaluate import evaluate               # noqa: E402
from minivit.models import (config_from_preset, epoch_flops, epochs_for_budget,  # noqa: E402
                            model_kind)
from minivit.train import TrainSettings, train      # noqa: E402
from readme_tables import ablation_table            # noqa: E402

# today's 60-minute recipe (Makefile cifar10-60min), the base of every variant
BASE_SETTINGS = dict(batch_size=64, lr=1e-3)
DEFAULT_VARIANTS = ["base", "gap:classifier=gap", "sincos:pos_embed=sincos2d",
                    "ema:ema_decay=0.999", "droppath:drop_path=0.1", "dropout:dropout=0.1"]


def _value(text):
    """'0.1' → 0.1, '4' → 4, 'gap' → 'gap', '2,9' → (2, 9.0) (RandAugment N,M),
    '32/64/128' → (32, 64, 128) (a conv trunk's widths or depths)."""
    if "/" in text:
        return tuple(int(v) for v in text.split("/"))
    if "," in text:
        n, m = text.split(",")
        return (int(n), float(m))
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_variant(spec: str, base):
    """'NAME:key=value,key=value' → (name, model overrides, settings overrides); model
    fields are those of ``base``'s config class (a ViT, ResNet or hybrid)."""
    name, _, rest = spec.partition(":")
    model_fields = {f.name for f in dataclasses.fields(base)}
    train_fields = {f.name for f in dataclasses.fields(TrainSettings)}
    model, settings = {}, {}
    for item in filter(None, _split_items(rest)):
        key, eq, val = item.partition("=")
        if not eq:
            raise ConfigError(f"variant {name!r}: expected key=value, got {item!r}")
        if key in model_fields:
            model[key] = _value(val)
        elif key in train_fields:
            settings[key] = _value(val)
        else:
            raise ConfigError(f"variant {name!r}: {key!r} is neither a "
                              f"{type(base).__name__} field nor a TrainSettings field")
    return name, model, settings


def _split_items(rest: str):
    """Split 'a=1,b=2,rand_augment=2,9' on the commas that start a new key=value."""
    items, cur = [], ""
    for part in rest.split(","):
        if "=" in part or not cur:
            if cur:
                items.append(cur)
            cur = part
        else:                                # a comma inside a value (RandAugment N,M)
            cur += "," + part
    if cur:
        items.append(cur)
    return items


def tta_scores(model, data) -> dict:
    """Test accuracy of ``model`` with flip and with flip-shift test-time augmentation
    (:mod:`minivit.tta`): the two row fields tta_flip_acc and tta_flip_shift_acc."""
    return {f"tta_{mode.replace('-', '_')}_acc":
            evaluate(model, data["x_test"], data["y_test"], tta=mode)["acc"]
            for mode in ("flip", "flip-shift")}


def ema_score(checkpoint: Path, has_ema: bool, data, backend):
    """Test accuracy of a checkpoint's weight average (its ``ema/`` keys; None when
    ``has_ema`` is false), evaluated from the file rather than copied from metrics.jsonl:
    hybrid runs trained before 2026-12-01 logged their average evaluated under the raw
    encoder (HybridViT.params did not yet reach model.vit), so re-importing them corrects
    their EMA figure."""
    from minivit.checkpoint import load_model
    if not has_ema:
        return None
    model = load_model(checkpoint, backend=backend, ema=True)[0]
    return evaluate(model, data["x_test"], data["y_test"])["acc"]


def imported_row(name, run_dir: Path, base, budget, per_epoch, data, args,
                 within=False) -> dict:
    """A table row for a finished run: its config and settings (read from its checkpoint)
    against the search's base, final accuracy, TTA scores (:func:`tta_scores`, evaluated
    here), compute and wall time. Raises ConfigError when the run is not of this preset's family or spent a
    compute more than half a base epoch away from the budget (``within``: more than the
    budget, or less than 80% of it)."""
    from minivit.checkpoint import load_checkpoint, load_model
    path = run_dir / "checkpoint.npz"
    ck = load_checkpoint(path)
    meta, config = ck["meta"], ck["config"]
    if type(config) is not type(base):
        raise ConfigError(f"{path}: not a {model_kind(base)} run "
                          f"(model_kind {meta.get('model_kind', 'vit')!r})")
    last = meta["history"][-1]
    spent = last["train_flops"]
    if (not 0.8 * budget <= spent <= budget) if within else \
            abs(spent - budget) > 0.5 * per_epoch:
        raise ConfigError(f"{path}: spent {spent:.3g} training FLOP, not the "
                          f"budget {budget:.3g}")
    model_kw = {k: v for k, v in dataclasses.asdict(config).items()
                if getattr(base, k) != v}
    # what this script would have used for the base (see main): the search's batch size,
    # and half the run as warm-up when it is shorter than 4 epochs
    defaults = dataclasses.asdict(TrainSettings(**dict(BASE_SETTINGS, batch_size=args.batch_size)))
    if meta["settings"]["epochs"] < 4:
        defaults["warmup_epochs"] = meta["settings"]["epochs"] / 2
    ignore = {"epochs", "eval_every", "backend", "eval_batch_size"}
    defaults["seed"] = args.seed              # a run of another seed says so in its row
    settings_kw = {k: v for k, v in meta["settings"].items()
                   if k not in ignore and k in defaults and defaults[k] != v}
    model, _ = load_model(path, backend=args.backend)
    return {"name": name, "model": model_kw, "settings": settings_kw,
            "epochs": meta["settings"]["epochs"], "train_flops": last["train_flops"],
            "test_acc": last["test_acc"],
            "ema_test_acc": ema_score(path, bool(ck["ema"]), data, args.backend),
            **tta_scores(model, data), "wall_s": last["elapsed_s"],
            "images_per_s": last["images_per_s"], "history": meta["history"],
            "imported_from": str(run_dir)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cifar10-tiny")
    p.add_argument("--budget-epochs", type=float, default=7.0,
                   help="compute budget in epochs of the base model (28 = the 60-min recipe)")
    p.add_argument("--budget-flops", type=float, default=None,
                   help="compute budget in training FLOP instead (e.g. 1.6e14, issue 16's "
                        "hybrid target); an imported run must then spend at most this, and "
                        "at least 80%% of it")
    p.add_argument("--variant", action="append", default=None, metavar="NAME:k=v,k=v",
                   help=f"repeatable; default: {' '.join(DEFAULT_VARIANTS)}")
    p.add_argument("--batch-size", type=int, default=BASE_SETTINGS["batch_size"])
    p.add_argument("--backend", default="numba", choices=("numpy", "numba"))
    p.add_argument("--runs", default=str(ROOT / "runs"),
                   help="where the runs' checkpoints go (a knob_ablation[_TAG] folder)")
    p.add_argument("--import-run", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="repeatable: a finished run (e.g. `make cifar10-30min`'s) joins the "
                        "table as variant NAME without training it again — its settings "
                        "are read from its checkpoint, its compute must match the budget")
    p.add_argument("--add", action="store_true",
                   help="keep the rows already in the JSON (same preset, budget and data) "
                        "except those of the variants given here")
    p.add_argument("--rescore", action="store_true",
                   help="with --add: evaluate the TTA scores a kept row lacks (rows written "
                        "before flip-shift TTA existed) from its run's checkpoint")
    add_data_flags(p)
    args = p.parse_args(argv)
    if args.budget_flops is not None and args.budget_flops <= 0:
        p.error(f"--budget-flops must be positive, got {args.budget_flops:g}")

    base = config_from_preset(args.preset)
    data = load_data(args, base)
    n_train = len(data["x_train"])
    within = args.budget_flops is not None      # a FLOP budget is a ceiling
    budget = args.budget_flops if within else \
        args.budget_epochs * epoch_flops(base, n_train, args.batch_size)
    tag = "_" + args.tag if args.tag else ""
    runs = Path(args.runs) / f"knob_ablation{tag}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"knob_ablation{tag}.json"
    rows = []
    specs = args.variant if args.variant is not None else ([] if args.import_run
                                                           else DEFAULT_VARIANTS)
    try:                  # every variant is checked before the first one trains
        variants = [parse_variant(spec, base) for spec in specs]
        for _, model_kw, _ in variants:
            base.replace(**model_kw)                  # e.g. widths of the wrong length
    except ConfigError as e:
        p.error(str(e))
    names = [v[0] for v in variants] + [spec.partition("=")[0] for spec in args.import_run]
    if args.add and path.is_file():
        old = json.loads(path.read_text())
        same = (old.get("preset"), old.get("budget_flops"), old.get("n_train"), old.get("data"))
        if same != (args.preset, budget, n_train, "synthetic" if args.synthetic else "cifar10"):
            p.error(f"--add: {path} holds another search (preset, budget, data: {same}); "
                    "run without --add to start it anew")
        rows = [r for r in old["runs"] if r["name"] not in names]
    if args.rescore:
        from minivit.checkpoint import load_model
        for row in rows:
            if "tta_flip_shift_acc" in row:
                continue
            ck = Path(row.get("imported_from") or runs / row["name"]) / "checkpoint.npz"
            if not ck.is_file():
                p.error(f"--rescore: row {row['name']!r} has no checkpoint at {ck}")
            row.update(tta_scores(load_model(ck, backend=args.backend)[0], data))
            print(f"{row['name']}: flip TTA {100 * row['tta_flip_acc']:.2f}%, flip-shift "
                  f"{100 * row['tta_flip_shift_acc']:.2f}%", flush=True)

    def document():
        return {"benchmark": "knob_ablation", "preset": args.preset, "args": vars(args),
                "budget_flops": budget, "base_settings": BASE_SETTINGS,
                "data": "synthetic" if args.synthetic else "cifar10", "n_train": n_train,
                "machine": {"platform": platform.platform(),
                            "python": platform.python_version()},
                "runs": rows}

    def write():
        # after every run, so an interrupted search keeps the runs it finished
        write_json(path, document())

    for spec in args.import_run:
        name, eq, run_dir = spec.partition("=")
        if not eq or not name:
            p.error(f"--import-run: expected NAME=RUN_DIR, got {spec!r}")
        try:
            rows.append(imported_row(name, Path(run_dir), base, budget,
                                     epoch_flops(base, n_train, args.batch_size), data, args,
                                     within=within))
        except (MinivitError, OSError) as e:          # a bad run folder or checkpoint
            p.error(f"--import-run {spec}: {e}")
        write()
        print(f"{name} (imported from {run_dir}): {100 * rows[-1]['test_acc']:.2f}%", flush=True)

    for name, model_kw, settings_kw in variants:
        config = base.replace(**model_kw)
        s = dict(BASE_SETTINGS, batch_size=args.batch_size, backend=args.backend,
                 seed=args.seed)
        s.update(settings_kw)
        s.setdefault("epochs", epochs_for_budget(budget, config, n_train, s["batch_size"],
                                                 within=within,
                                                 full_token_epochs=s.get("full_token_epochs", 0)))
        if s["epochs"] < 4 and "warmup_epochs" not in s:
            s["warmup_epochs"] = s["epochs"] / 2
        t0 = time.perf_counter()
        try:
            r = train(config, data=data, out_dir=runs / name, progress=False, overwrite=True,
                      eval_every=max(1, s["epochs"] // 4), **s)
        except TrainingInterrupted as e:
            # The trainer has written its checkpoint and said so; a traceback would bury
            # that line. Say how to finish the row instead.
            print(f"{name}: stopped; finish it with `minivit train --out {runs / name} "
                  f"--resume` (plus your data flags), then add it to the table with "
                  f"`--add --import-run {name}={runs / name}`", flush=True)
            return 128 + int(e.signum or 2)
        wall = time.perf_counter() - t0
        last = r["history"][-1]
        row = {"name": name, "model": model_kw, "settings": settings_kw, "epochs": s["epochs"],
               "train_flops": last["train_flops"], "test_acc": r["test_acc"],
               "ema_test_acc": last.get("ema_test_acc"), **tta_scores(r["model"], data),
               "wall_s": wall, "images_per_s": last["images_per_s"],
               "history": r["history"]}
        rows.append(row)
        write()
        print(f"{name}: {100 * r['test_acc']:.2f}% (flip TTA {100 * row['tta_flip_acc']:.2f}%"
              + (f", EMA {100 * row['ema_test_acc']:.2f}%" if row["ema_test_acc"] is not None
                 else "") + f") in {s['epochs']} epochs, {row['train_flops']:.3g} FLOP, "
              f"{wall / 60:.1f} min", flush=True)
    print()
    print(ablation_table(document()))
    print(f"→ {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
