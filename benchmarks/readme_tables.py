"""Regenerate the README's "Performance" tables from the benchmark JSON (no hand-copied
numbers).

Reads ``benchmarks/results/train_step.json`` (``train_step.py``),
``profile_step_before.json``, ``profile_step.json`` (``profile_step.py`` on the old and
the current backend) and ``PREVIOUS_PROFILE`` (an earlier ``profile_step.json``, kept so
the table shows what each later change bought) and rewrites the text between the markers
``<!-- perf-tables:begin -->`` and ``<!-- perf-tables:end -->`` in README.md; and from
``knob_ablation_3ep.json`` (``knob_ablation.py --tag 3ep``; also ``_14ep``,
``_hybrid_1.6e14`` and ``_resnet_1.6e14``) and ``vit_vs_resnet.json``
(``vit_vs_resnet.py``) the tables between ``<!-- ablation-table:begin -->`` / ``end`` and
``<!-- vit-vs-resnet-table:begin -->`` / ``end``.

    python benchmarks/readme_tables.py [--readme README.md] [--check]

``--check`` only reports whether README.md is up to date (exit status 1 if not).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
BEGIN, END = "<!-- perf-tables:begin -->", "<!-- perf-tables:end -->"
# the profile committed before this session's kernel changes (error model, heap reuse)
PREVIOUS_PROFILE = "profile_step_f2d2250.json"
NAMES = {"numba": "**minivit numba**", "torch": "PyTorch eager", "torch-compile": "torch.compile",
         "numpy": "minivit numpy"}


def _load(name, key="models"):
    path = os.path.join(RESULTS, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        d = json.load(f)
    return d if isinstance(d, dict) and key in d else None     # None: an older format


def _model_label(m, cfg):
    return (f"{m} (D{cfg['dim']}, L{cfg['depth']}, H{cfg['heads']}, MLP{cfg['mlp_dim']})"
            if cfg else m)


def train_table(ts):
    """Markdown for train_step.json (the subprocess-per-framework format)."""
    if not ts or not any("peak_rss_mib" in b for m in ts["models"].values()
                         for b in m["backends"].values()):
        return ("*No results in the current format: run `python benchmarks/train_step.py`, "
                "then this script.*\n")
    peak = ts.get("numpy_matmul_gflops")
    load = ts.get("load_average") or [None, None]
    lines = [f"Batch {ts['batch']}, float32, {ts['threads']} threads, {ts['cpu_count']} CPU "
             f"cores; medians over {ts['rounds']} rounds × {ts['steps']} steps; NumPy float32 "
             f"matmul peak in the same run: **{peak:.0f} GFLOP/s**"
             + (f"; load average {load[0][0]:.1f} → {load[1][0]:.1f}" if all(load) else "")
             + (f"; PyTorch {ts['torch_version']}" if ts.get("torch_version") else "") + ".",
             "",
             "| model | framework | train img/s | train GFLOP/s (% of peak) | inference img/s "
             "| inference GFLOP/s (% of peak) | peak RSS |",
             "|---|---|---|---|---|---|---|"]
    for m, r in ts["models"].items():
        first = True
        for fw, v in r["backends"].items():
            label = _model_label(m, r.get("config")) if first else ""
            first = False
            if "error" in v:
                lines.append(f"| {label} | {NAMES.get(fw, fw)} | failed: {v['error']} | | | | |")
                continue
            lines.append(
                f"| {label} | {NAMES.get(fw, fw)} | {v['train_img_s']:.0f} | "
                f"{v['train_gflops']:.0f} ({v['train_pct_of_matmul_peak']:.0f}%) | "
                f"{v['infer_img_s']:.0f} | {v['infer_gflops']:.0f} "
                f"({v['infer_pct_of_matmul_peak']:.0f}%) | {v['peak_rss_mib']:.0f} MiB |")
    lines.append("")
    for m, r in ts["models"].items():
        parts = [f"{pair.split('/')[1]}: train {q['train']:.2f}×, inference {q['infer']:.2f}×"
                 for pair, q in r.get("ratios", {}).items()]
        if parts:
            lines.append(f"- {m}, minivit numba vs " + "; vs ".join(parts))
    return "\n".join(lines) + "\n"


def profile_table(before, after, previous=None):
    """Markdown: per-op ms per training step (and GFLOP/s for the matmuls): the path before
    issue 14 (``numba-old`` in the same run, or ``before``), an earlier committed profile
    of the current path (``previous``, e.g. profile_step_f2d2250.json; optional) and now."""
    if not after:
        return "*No profile: run `python benchmarks/profile_step.py`, then this script.*\n"
    out = []
    for m, ra in after["models"].items():
        a = ra.get("numba")
        b = ra.get("numba-old") or (before or {}).get("models", {}).get(m, {}).get("numba")
        p = (previous or {}).get("models", {}).get(m, {}).get("numba")
        if not a:
            continue
        cols = [("old path", b)] if b else []
        cols += [(previous["commit"], p)] if p else []
        cols += [("now", a)]
        hdr = (f"**{m}**, batch {after['batch']}, {after['threads']} threads — ms per training "
               "step: " + " → ".join(f"{c['step_ms']:.0f} ms {name}" for name, c in cols)
               + f" ({after.get('commit') or 'this tree'}{_load_note(after)})")
        out += [hdr, "",
                "| op (phase) | calls | " + " | ".join(f"ms {n}" for n, _ in cols) + " | "
                + " | ".join(f"GFLOP/s {n}" for n, _ in cols) + " |",
                "|---|---|" + "---|" * (2 * len(cols))]
        labels = sorted(set().union(*(c["ops"] for _, c in cols)),
                        key=lambda k: -max(c["ops"].get(k, {}).get("ms", 0) for _, c in cols))
        gf = lambda o: f"{o['gflops']:.0f}" if o and o.get("gflops") else ""   # noqa: E731
        ms = lambda o: f"{o['ms']:.1f}" if o else "—"                          # noqa: E731
        for k in labels:
            ops = [c["ops"].get(k) for _, c in cols]
            if max(o["ms"] if o else 0 for o in ops) < 0.0005 * a["step_ms"]:
                continue                          # < 0.05% of the step: not worth a row
            first = next(o for o in ops if o)
            out.append(f"| `{k}` ({first['phase']}) | {first['calls']} | "
                       + " | ".join(ms(o) for o in ops) + " | "
                       + " | ".join(gf(o) for o in ops) + " |")
        out.append("| Python glue between ops | | "
                   + " | ".join(f"{c['other_ms']:.1f}" for _, c in cols) + " |"
                   + " |" * len(cols))
        out.append("")
    return "\n".join(out) + "\n"


def _load_note(d):
    la = d.get("load_average")
    return f", load average {la[0]:.1f}" if la else ""


def ab_table(ab):
    """Markdown: the in-process A/B speed-ups of ab_kernels.json."""
    if not ab:
        return "*No A/B results: run `python benchmarks/ab_kernels.py`, then this script.*\n"
    la = ab.get("load_average")
    lines = [f"In-process A/B (`benchmarks/ab_kernels.py`, {ab['reps']} alternations, batch "
             f"{ab['batch']}, {ab['threads']} threads"
             + (f", load average {la[0]:.1f}" if la else "") + "), old path time / new path "
             "time (medians):", "",
             "| change | cifar10-tiny | cifar10-small |", "|---|---|---|"]
    if "pool" in ab:
        lines.append("| training step (fwd+bwd): gemms from Numba's pool vs NumPy `@` on "
                     "OpenBLAS's pool | " + " | ".join(
                         f"{ab['pool'][m]['speedup']:.2f}×" for m in ("cifar10-tiny", "cifar10-small")) + " |")
    if "attn" in ab:
        for k in ("forward", "backward"):
            lines.append(f"| attention {k}: strided BLAS gemms vs hand-written loops | " +
                         " | ".join(f"{ab['attn'][m][k]['speedup']:.2f}×"
                                    for m in ("cifar10-tiny", "cifar10-small")) + " |")
    if "exp" in ab:
        lines.append(f"| float32 exp of softmax/GELU: float32 constants vs float64-promoted "
                     f"polynomial ((8320, 65) rows; max rel. error {ab['exp']['max_rel_err_new']:.1e}"
                     f" vs {ab['exp']['max_rel_err_old']:.1e}) | {ab['exp']['speedup']:.2f}× | |")
    if "epi" in ab:
        lines += ["", "Rows per gemm call before a bias/GELU epilogue (`epi_rows`; "
                  "0 = one block per thread), median ms:", "",
                  "| layer | " + " | ".join(next(iter(ab["epi"].values())).keys()) + " |",
                  "|---|" + "---|" * len(next(iter(ab["epi"].values())))]
        for name, r in ab["epi"].items():
            lines.append(f"| {name} | " + " | ".join(f"{v['median_ms']:.1f}" for v in r.values()) + " |")
    return "\n".join(lines) + "\n"


def ablation_table(d):
    """Markdown for knob_ablation.json: one row per variant, the ones that did not help
    included."""
    if not d:
        return "*No ablation results: run `python benchmarks/knob_ablation.py`, then this script.*\n"
    a = d["args"]
    of_base = (" (at most)" if a.get("budget_flops")       # --budget-flops: imports must fit
               else f" (= {a['budget_epochs']:g} epochs of the base)")
    lines = [f"{d['preset']}, budget {d['budget_flops']:.3g} training FLOP{of_base}, "
             f"seed {a['seed']}, batch {a['batch_size']}, "
             f"{a['backend']} backend; base settings: "
             + ", ".join(f"{k}={v}" for k, v in d["base_settings"].items()) + ".",
             "",
             "| variant | change | epochs | train FLOP | test acc | EMA (0.999) | flip TTA "
             "| flip-shift TTA | wall min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        # a trunk's widths as --variant spells them (32/64/128)
        change = ", ".join(f"{k}=" + ("/".join(map(str, v)) if isinstance(v, (list, tuple))
                                      else str(v))
                           for k, v in {**r["model"], **r["settings"]}.items()
                           if (k, v) != ("ema_decay", 0.999)) or "–"   # the header's EMA
        ema = f"{100 * r['ema_test_acc']:.2f}%" if r.get("ema_test_acc") is not None else "–"
        shift = (f"{100 * r['tta_flip_shift_acc']:.2f}%" if r.get("tta_flip_shift_acc")
                 is not None else "–")
        name = r["name"] + (f" (imported: `{r['imported_from']}`)" if r.get("imported_from")
                            else "")
        lines.append(f"| {name} | {change} | {r['epochs']} | {r['train_flops']:.3g} "
                     f"| {100 * r['test_acc']:.2f}% | {ema} | {100 * r['tta_flip_acc']:.2f}% "
                     f"| {shift} | {r['wall_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def vit_resnet_table(d):
    """Markdown for vit_vs_resnet.json: one row per budget, a column per model (final test
    accuracy, epochs, wall minutes); budgets not yet run are listed as such."""
    if not d:
        return "*No results: run `python benchmarks/vit_vs_resnet.py`, then this script.*\n"
    runs = {(r["model"], r["budget"]): r for r in d["runs"]}
    dates = sorted({r.get("date", d["date"]) for r in d["runs"]}) or [d["date"]]
    lines = [f"Measured {', '.join(dates)}; recipe: "
             + ", ".join(f"{k}={v}" for k, v in d["recipe"].items()) + ".", "",
             "| budget (train FLOP) | " + " | ".join(d["models"]) + " |",
             "|---|" + "---|" * len(d["models"])]
    for b in d["budgets"]:
        cells = []
        for m in d["models"]:
            r = runs.get((m, b))
            cells.append(f"{100 * r['test_acc']:.2f}% ({r['epochs']} ep, {r['wall_s'] / 60:.0f} min)"
                         if r else "not run yet")
        lines.append(f"| {b:.2g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def conv_speed_table(d):
    """Markdown for conv_speed.json: each distinct conv of the ResNet (fwd + bwd GFLOP/s,
    numba against the matmul peak and against PyTorch), the count-weighted total and the
    whole training step."""
    if not d:
        return "*No results: run `python benchmarks/conv_speed.py`, then this script.*\n"
    peak = d["matmul_peak_gflops"]
    lines = [f"{d['preset']}, batch {d['batch']}, float32, {d['threads']} threads, measured "
             f"{d['date_utc'][:10]}; NumPy float32 matmul peak of the same run: {peak:.1f} "
             "GFLOP/s. Forward + backward of each distinct conv (the stem without dx):", "",
             "| conv (H, C_in→C_out, k, stride) | count | numba GFLOP/s | % of peak | torch GFLOP/s |",
             "|---|---|---|---|---|"]
    for r in d["layers"]:
        lines.append(f"| {r['H']}, {r['C_in']}→{r['C_out']}, {r['k']}, {r['stride']} | {r['count']} "
                     f"| {r['numba_gflops']:.0f} | {100 * r['numba_frac_peak']:.0f}% "
                     f"| {r.get('torch_gflops', float('nan')):.0f} |")
    a, n = d["all_convs"], d["whole_net"]
    lines.append(f"| **all convs, weighted by count** | | **{a['numba_gflops']:.0f}** "
                 f"| **{100 * a['numba_frac_peak']:.0f}%** | {a.get('torch_gflops', float('nan')):.0f} |")
    lines += ["", f"Whole training step (forward + backward + loss, no update): numba "
              f"{n['numba_images_per_s']:.0f} img/s, torch "
              f"{n.get('torch_images_per_s', float('nan')):.0f} img/s."]
    return "\n".join(lines) + "\n"


def _section(name, body):
    return "\n".join([f"<!-- {name}:begin -->",
                      "<!-- generated by benchmarks/readme_tables.py from benchmarks/results/*.json; "
                      "do not edit by hand -->", "", body + f"<!-- {name}:end -->"])


def render_sections():
    """Every generated section of the README: {marker name: text between its markers}."""
    return {"ablation-table": _section("ablation-table",
                                       ablation_table(_load("knob_ablation_3ep.json", key="runs"))),
            "ablation-table-14ep": _section(
                "ablation-table-14ep", ablation_table(_load("knob_ablation_14ep.json", key="runs"))),
            "ablation-table-hybrid": _section(
                "ablation-table-hybrid",
                ablation_table(_load("knob_ablation_hybrid_1.6e14.json", key="runs"))),
            "ablation-table-cnn": _section(
                "ablation-table-cnn",
                ablation_table(_load("knob_ablation_resnet_1.6e14.json", key="runs"))),
            "conv-speed-table": _section("conv-speed-table",
                                         conv_speed_table(_load("conv_speed.json", key="layers"))),
            "vit-vs-resnet-table": _section("vit-vs-resnet-table",
                                            vit_resnet_table(_load("vit_vs_resnet.json", key="runs")))}


def render():
    ts = _load("train_step.json")
    ab = _load("ab_kernels.json", key="reps")
    before, after = _load("profile_step_before.json"), _load("profile_step.json")
    previous = _load(PREVIOUS_PROFILE)
    return "\n".join([
        BEGIN,
        "<!-- generated by benchmarks/readme_tables.py from benchmarks/results/*.json; "
        "do not edit by hand -->",
        "",
        train_table(ts),
        "Per-op profile of one training step of the numba backend "
        "(`benchmarks/profile_step.py`, medians over steps, each op timed to its end). "
        "Old path = the path before issue 14 (NumPy `@` on OpenBLAS's own thread pool, "
        "hand-written attention loops), run step by step alternately with the current one "
        "in the same process, so it shares every later fix that is not about the path; "
        f"{(previous or {}).get('commit', 'previous')} = the current path as profiled "
        "before the NumPy error model (dividing loops vectorise: GELU, AdamW) and the heap "
        "reuse (`minivit/backends/memory.py`) went in; now = this tree:",
        "",
        profile_table(before, after, previous),
        ab_table(ab),
        END])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readme", default=os.path.join(os.path.dirname(HERE), "README.md"))
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    with open(a.readme) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        print(f"{a.readme}: markers {BEGIN} … {END} not found", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + render() + tail
    for name, body in render_sections().items():
        b, e = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if b in new and e in new:
            head, rest = new.split(b, 1)
            _, tail = rest.split(e, 1)
            new = head + body + tail
    if a.check:
        ok = new == text
        print("README performance tables are " + ("up to date" if ok else "STALE"))
        return 0 if ok else 1
    with open(a.readme, "w") as f:
        f.write(new)
    print(f"updated {a.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
