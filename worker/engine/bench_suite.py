"""The methods benchmark: every registered method, PCA+KMeans and the anchors on the same stacks.

    from worker.engine.bench_suite import run_suite
    report = run_suite(families=["blobs10"], seeds=[2001], n=2000, device="cpu")

For each family and seed it simulates the stack (worker.engine.bench_families), writes it with
its RELION star (so the CTF travels as it would from a real stack) and runs:
- every method in worker.engine.config.METHODS through the real pipeline
  (worker.engine.pipeline.classify), with k = the family's views (+1 with junk) and the explicit
  parameters in METHOD_PARAMS where a method needs them;
- PCA+KMeans on the phase-flipped particles, with aligned class averages;
- the anchors (RELION, ASPIRE) from their cache, run and cached when missing (bench_anchors).
Every result is scored by worker.engine.bench_metrics.score from its labels and class averages.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from worker.engine import bench_families as families
from worker.engine.bench_metrics import score
from worker.engine.version import __version__

# Explicit parameters where a method's pipeline defaults would not suit a 2-core benchmark;
# methods not listed run with their ClassifyConfig defaults (what a user gets).
METHOD_PARAMS: dict[str, dict] = {
    "reference": {"epoch_num": 5, "round_num": 3},
}
BASELINE = "pca-kmeans"
SUMMARY_KEYS = ("ari", "nmi", "view_correlation", "junk_caught", "particles_kept", "seconds", "cpu_seconds")


def registered_methods() -> tuple[str, ...]:
    from worker.engine.config import METHODS

    return tuple(METHODS)


def run_pipeline_method(
    method: str, star: Path, k: int, device: str, out_dir: Path, overrides: dict | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, class averages, seconds) of one method through the real pipeline."""
    from worker.engine.config import ClassifyConfig
    from worker.engine.io.particles import ParticleStack
    from worker.engine.pipeline import classify

    params = {**METHOD_PARAMS.get(method, {}), **(overrides or {})}
    config = ClassifyConfig(cluster_num=k, method=method, device=device, seed=0, **params)
    with ParticleStack.open(star) as stack:
        started = time.perf_counter()
        result = classify(stack, config, out_dir, command=["bench", method])
        seconds = time.perf_counter() - started
    with ParticleStack.open(out_dir / "class_averages.mrcs") as averages:
        return result.labels, averages.read(), seconds


def run_pca_kmeans(star: Path, k: int, device: str) -> tuple[np.ndarray, np.ndarray, float]:
    """PCA+KMeans on phase-flipped, normalised particles; aligned class averages."""
    from worker.engine.align import AlignedAverager
    from worker.engine.cluster import initial_labels
    from worker.engine.ctf_device import PhaseFlipper
    from worker.engine.io.particles import ParticleStack
    from worker.engine.preprocess import preprocess

    with ParticleStack.open(star) as stack:
        started = time.perf_counter()
        flip = None if stack.ctf is None else PhaseFlipper(stack.ctf, stack.pixel_size, stack.box, device)
        images = preprocess(stack, stack.box, device, before_normalise=flip)
        labels = initial_labels(images[:, 0], k, 0)
        averages = AlignedAverager().average(images[:, 0], labels, k)
        return labels, averages, time.perf_counter() - started


def _row(family: str, seed: int, method: str, kind: str, metrics: dict, seconds: float, **extra) -> dict:
    return {
        "family": family,
        "seed": seed,
        "method": method,
        "kind": kind,
        "seconds": float(seconds),
        **metrics,
        **extra,
    }


def run_suite(
    family_names: list[str] | None = None,
    seeds: list[int] | None = None,
    n: int = families.DEFAULT_N,
    device: str = "cpu",
    methods: list[str] | None = None,
    anchors: tuple[str, ...] = ("relion", "aspire"),
    run_missing_anchors: bool = True,
    method_overrides: dict | None = None,
    on_progress: Callable[[str], None] = print,
    results: Path | None = None,
) -> dict:
    """Score every method, the baseline and the anchors on each family x seed (see docstring)."""
    from worker.engine.bench_anchors import RESULTS, anchor_result
    from worker.engine.simulate import write_simulation

    family_names = family_names or list(families.FAMILIES)
    seeds = list(seeds or families.HELD_OUT_SEEDS)
    methods = list(registered_methods()) + [BASELINE] if methods is None else list(methods)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cryoclust-methods-") as tmp:
        for name in family_names:
            k = families.class_count(name)
            for seed in seeds:
                key = families.stack_key(name, seed, n)
                sim = families.simulate_family(name, seed, n)
                star = write_simulation(sim, Path(tmp) / key)["star"]
                for method in methods:
                    cpu = time.process_time()
                    if method == BASELINE:
                        labels, averages, seconds = run_pca_kmeans(star, k, device)
                        kind = "baseline"
                    else:
                        labels, averages, seconds = run_pipeline_method(
                            method, star, k, device, Path(tmp) / key / f"run-{method}", method_overrides
                        )
                        kind = "cryoclust"
                    rows.append(
                        _row(
                            name,
                            seed,
                            method,
                            kind,
                            score(sim, labels, averages),
                            seconds,
                            cpu_seconds=time.process_time() - cpu,
                        )
                    )
                    on_progress(_progress(rows[-1]))
                for anchor in anchors:
                    try:
                        found = anchor_result(
                            anchor,
                            name,
                            seed,
                            n,
                            sim,
                            results=results or RESULTS,
                            run_missing=run_missing_anchors,
                            log=on_progress,
                        )
                    except Exception as err:  # noqa: BLE001  an anchor failing is reported, not fatal
                        on_progress(f"{key} {anchor}: failed ({type(err).__name__}: {err})")
                        found = None
                    if found is None:
                        rows.append(
                            {
                                "family": name,
                                "seed": seed,
                                "method": anchor,
                                "kind": "anchor",
                                "missing": True,
                            }
                        )
                        on_progress(f"{key} {anchor}: no cached result")
                        continue
                    record, averages = found
                    metrics = score(sim, np.asarray(record["labels"]), averages)
                    rows.append(
                        _row(
                            name,
                            seed,
                            anchor,
                            "anchor",
                            metrics,
                            record["seconds"],
                            cpu_seconds=record.get("cpu_seconds"),
                            cached=True,
                            command=record.get("command"),
                            anchor_version=record.get("version"),
                            load_average=record.get("load_average"),
                        )
                    )
                    on_progress(_progress(rows[-1]))
    return {
        "version": __version__,
        "device": device,
        "machine": platform.processor() or platform.machine(),
        # Floating-point results differ between CPU models (their BLAS kernels differ), and at
        # SNR 0.05 that can lead the EM to another optimum: record which CPU gave these figures.
        "cpu_model": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "n": n,
        "seeds": seeds,
        "seed_set": (
            "held-out"
            if set(seeds) <= set(families.HELD_OUT_SEEDS)
            else "development"
            if set(seeds) <= set(families.DEVELOPMENT_SEEDS)
            else "mixed"
        ),
        "families": {
            name: {**families.family_params(name), "classes": families.class_count(name)}
            for name in family_names
        },
        "method_params": {
            m: {**METHOD_PARAMS.get(m, {}), **(method_overrides or {})} for m in methods if m != BASELINE
        },
        "load_average": list(os.getloadavg()),  # at the end: a busy machine slows everything
        "runs": rows,
        "summary": summarise(rows),
        "default_method": default_method(),
        "bars": bars(rows, default_method()),
    }


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _progress(row: dict) -> str:
    junk = (
        ""
        if row.get("junk_caught") is None
        else (f" junk {row['junk_caught']:.2f} kept {row['particles_kept']:.2f}")
    )
    return (
        f"{row['family']}-seed{row['seed']} {row['method']:12s} ARI {row['ari']:.3f} "
        f"NMI {row['nmi']:.3f} views {row['view_correlation']:.3f}{junk} "
        f"({row['seconds']:.0f} s)"
    )


def summarise(rows: list[dict]) -> dict:
    """family -> method -> mean of each metric over the seeds that have it."""
    out: dict = {}
    for row in rows:
        if row.get("missing"):
            continue
        entry = out.setdefault(row["family"], {}).setdefault(row["method"], {"seeds": []})
        entry["seeds"].append(row["seed"])
        for key in SUMMARY_KEYS:
            if row.get(key) is not None:
                entry.setdefault(f"_{key}", []).append(row[key])
    for methods in out.values():
        for entry in methods.values():
            for key in SUMMARY_KEYS:
                values = entry.pop(f"_{key}", None)
                entry[key] = float(np.mean(values)) if values else None
    return out


def default_method() -> str:
    from worker.engine.config import ClassifyConfig

    return ClassifyConfig().method


BAR_NAMES = ("ari", "nmi", "view_correlation", "time")


def _seed_bars(mine: dict, theirs: dict) -> dict[str, bool]:
    """One seed's bars: ARI >= the anchor's - 0.02 (and >= 0.85 where the anchor's is >= 0.85);
    NMI and view correlation >= the anchor's; seconds <= 1/5 of the anchor's."""
    return {
        "ari": mine["ari"] >= theirs["ari"] - 0.02 and (theirs["ari"] < 0.85 or mine["ari"] >= 0.85),
        "nmi": mine["nmi"] >= theirs["nmi"],
        "view_correlation": mine["view_correlation"] >= theirs["view_correlation"],
        "time": mine["seconds"] <= theirs["seconds"] / 5,
    }


def bars(rows: list[dict], method: str, anchor: str = "relion") -> list[dict]:
    """The issue's bars for `method` against `anchor`, per family, judged seed by seed (the same
    stack for both): a family passes a bar only when every seed with both results passes it
    (None where no seed has both); `failed_seeds` names the seeds that did not. On "easy"
    every method must reach ARI >= 0.95 on every seed."""
    results: dict = {}
    for row in rows:
        if not row.get("missing"):
            results.setdefault(row["family"], {}).setdefault(row["seed"], {})[row["method"]] = row
    out = []
    for family, seeds in results.items():
        verdicts = {
            seed: _seed_bars(methods[method], methods[anchor])
            for seed, methods in sorted(seeds.items())
            if method in methods and anchor in methods
        }
        row: dict = {"family": family, "method": method, "anchor": anchor, "seeds": sorted(verdicts)}
        for name in BAR_NAMES:
            row[name] = all(v[name] for v in verdicts.values()) if verdicts else None
        row["failed_seeds"] = {
            name: [seed for seed, v in verdicts.items() if not v[name]]
            for name in BAR_NAMES
            if any(not v[name] for v in verdicts.values())
        }
        if family == "easy":
            row["easy_all_methods"] = all(m["ari"] >= 0.95 for ms in seeds.values() for m in ms.values())
        out.append(row)
    return out


def _verdict(row: dict, name: str) -> str:
    """One bar of a family's row: pass, FAIL with the failing seeds, or n/a."""
    value = row.get(name)
    text = "n/a" if value is None else ("pass" if value else "FAIL")
    seeds = row.get("failed_seeds", {}).get(name)
    return text + (f" (seed {', '.join(map(str, seeds))})" if seeds else "")


def markdown_table(report: dict) -> str:
    """family x method: ARI, NMI, view correlation, junk caught / particles kept, seconds (wall
    and CPU: on a shared machine the wall time of a run depends on what else was running)."""
    lines = [
        "| family | method | ARI | NMI | averages vs views | junk caught | particles kept | seconds | CPU seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def fmt(value, pattern="{:.3f}"):
        return "-" if value is None else pattern.format(value)

    for family, methods in report["summary"].items():
        for method, m in methods.items():
            lines.append(
                f"| {family} | {method} | {fmt(m['ari'])} | {fmt(m['nmi'])} | "
                f"{fmt(m['view_correlation'])} | {fmt(m['junk_caught'], '{:.2f}')} | "
                f"{fmt(m['particles_kept'], '{:.2f}')} | {fmt(m['seconds'], '{:,.0f}')} | "
                f"{fmt(m['cpu_seconds'], '{:,.0f}')} |"
            )
    missing = sorted(
        {f"{r['method']} ({r['family']}, seed {r['seed']})" for r in report["runs"] if r.get("missing")}
    )
    if missing:
        lines += ["", "No result yet: " + "; ".join(missing)]

    if report.get("bars"):
        lines.append("")
    for row in report.get("bars", []):
        text = (
            f"Bars, {row['method']} vs {row['anchor']} on {row['family']}: ARI {_verdict(row, 'ari')}, "
            f"NMI {_verdict(row, 'nmi')}, averages {_verdict(row, 'view_correlation')}, "
            f"time {_verdict(row, 'time')}"
        )
        if "easy_all_methods" in row:
            text += f"; every method ARI >= 0.95 {_verdict(row, 'easy_all_methods')}"
        lines.append(text)
    return "\n".join(lines)
