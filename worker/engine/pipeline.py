"""The classification pipeline: preprocess, initial labels, then train/KMeans rounds.

    from worker.engine.pipeline import classify
    result = classify(ParticleStack.open("particles.mrcs"), ClassifyConfig(), "out/")

Every round is written to OUT/round_NN/ as it finishes; calling `classify` again on the same
folder resumes after the last complete round and gives the same result as an unbroken run.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from worker.engine import outputs
from worker.engine.allocator import reuse_freed_memory
from worker.engine.averages import MeanAverager
from worker.engine.cluster import kmeans_labels, pca_features, project_2d, umap_2d
from worker.engine.config import STORAGE_BYTES, ClassifyConfig
from worker.engine.convergence import label_churn, stop_reason
from worker.engine.devices import resolve_device
from worker.engine.empty_boxes import with_empty_class
from worker.engine.errors import InputError
from worker.engine.events import (
    Callback,
    Event,
    LossPoint,
    RoundDone,
    RoundStarted,
    StageProgress,
    ignore,
)
from worker.engine.io.atomic import temporary_sibling
from worker.engine.io.particles import ParticleStack
from worker.engine.memory import FULL_SIZE_BYTES, check_fits
from worker.engine.methods import get_method
from worker.engine.model import EMBEDDING_DIM
from worker.engine.preprocess import STORAGE_DTYPES, model_size, preprocess
from worker.engine.quality import class_resolutions
from worker.engine.version import __version__


@dataclass
class ClassifyResult:
    out_dir: Path
    labels: np.ndarray  # final labels, 0-based
    rounds: list[dict] = field(default_factory=list)  # each round's round.json
    device: str = "cpu"
    stopped: str | None = None  # why the rounds ended before round_num, if they did


STATE_FILE = "method_state.npz"
SCORE_KEYS = (
    "mean_log_likelihood",
)  # a method's per-round scores (round_scores), as named  # a method's between-round state, for exact resuming


def _averager(config: ClassifyConfig, method):
    if hasattr(method, "average"):
        return method  # a method with its own (CTF-weighted, aligned) averages
    if config.aligns_averages:
        from worker.engine.align import AlignedAverager

        return AlignedAverager()
    return MeanAverager()


def _phase_flipper(stack: ParticleStack, config: ClassifyConfig, device):
    if not (config.flips_phase and stack.ctf is not None):
        return None
    from worker.engine.ctf_device import PhaseFlipper

    return PhaseFlipper(stack.ctf, stack.pixel_size, stack.box, device)


def _class_quality(images: torch.Tensor, labels: np.ndarray, k: int, pixel_size: float, averager) -> list:
    """FRC-0.5 resolution per class, from the averager's independent half sets when it has them."""
    halves = getattr(averager, "half_averages", None)
    return class_resolutions(images, labels, k, pixel_size, halves=halves)


@dataclass
class _Run:
    """What every round of one run shares."""

    stack: ParticleStack
    config: ClassifyConfig
    out_dir: Path
    images: torch.Tensor
    pixel_size: float
    method: object
    averager: object
    generator: torch.Generator
    on_event: Callback
    device: torch.device
    size: int  # the model size
    started: float  # time.perf_counter() when the run started
    preprocess_seconds: float
    averaged_round: int | None = None  # the round whose labels the averager last averaged
    full_size_fits: bool = True  # the memory check left room for the full-size averages
    # Stages done once per run (preprocessing, initial labels), recorded in the timings of the
    # first round this run writes.
    pending_timings: dict[str, float] = field(default_factory=dict)

    def stage_timings(self, **round_stages: float) -> dict[str, float]:
        timings = {**self.pending_timings, **round_stages}
        self.pending_timings = {}
        return timings


def classify(
    stack: ParticleStack,
    config: ClassifyConfig,
    out_dir: str | Path,
    on_event: Callback = ignore,
    *,
    on_notice=None,
    command: list[str] | None = None,
) -> ClassifyResult:
    """Run (or resume) a classification and write its results into `out_dir`."""
    run = _start(stack, config, Path(out_dir), on_event, on_notice, command)
    config = run.config  # the effective parameters
    done, rounds, labels, initial = _resume(run)
    if initial is not None:
        run.pending_timings["initial_labels"] = initial.seconds
    stopped = _stop_reason(config, rounds[-1]) if rounds else None
    if config.round_num == 0 and not done:
        rounds.append(_round_zero(run, labels, initial))
    r = done[-1] if done else 0
    while stopped is None and r < config.round_num:
        r += 1
        labels, info = _one_round(run, r, labels)
        rounds.append(info)
        stopped = _stop_reason(config, info)

    full_size = _full_size_averages(run, rounds[-1]["round"], labels, on_notice)
    summary = _summary(run, rounds, stopped, full_size)
    outputs.write_final(run.out_dir, rounds[-1]["round"], stack, summary)
    return ClassifyResult(run.out_dir, labels, rounds, str(run.device), stopped)


def _start(
    stack: ParticleStack,
    config: ClassifyConfig,
    out_dir: Path,
    on_event: Callback,
    on_notice,
    command: list[str] | None,
) -> _Run:
    """Check the input and the memory, record config.json and preprocess: what every round shares."""
    reuse_freed_memory()  # no page faults for each batch's temporaries (allocator.py)
    n, k = len(stack), config.cluster_num
    if n < 2:
        raise InputError(f"{stack.source}: a classification needs at least 2 particles, found {n}")
    if k > n:
        raise InputError(f"{stack.source}: cluster_num {k} is more than the {n} particles")
    device, notice = resolve_device(config.resolved().device)
    if notice and on_notice:
        on_notice(notice)
    # the effective parameters, as config.json records them
    config = config.resolved(str(device)).for_stack(stack.box, stack.pixel_size)
    if device.type == "cuda":
        # A worker runs many jobs: this run's peak only. The allocator's statistics exist once
        # CUDA is initialised; a fresh process that resets them first gets "Invalid device argument".
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)
    size = model_size(stack.box, config.size)
    # Before anything is read: a run that cannot fit stops here with one line, not in the OOM killer.
    fit = check_fits(
        n,
        size,
        config.method if config.round_num > 0 else None,  # round 0 runs no method
        config.batch_size,
        device,
        STORAGE_BYTES[config.storage],
        stack.box if config.round_num > 0 else None,  # round 0 makes no full-size averages
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    outputs.write_json(
        out_dir / "config.json",
        {
            "parameters": config.to_dict(),
            "input": str(stack.source),
            "device": str(device),
            "version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command if command is not None else sys.argv,
        },
    )

    images = preprocess(
        stack,
        config.size,
        device,
        before_normalise=_phase_flipper(stack, config, device),
        on_progress=lambda done, total: on_event(StageProgress(0, "preprocess", done, total)),
        dtype=STORAGE_DTYPES[config.storage],
    )
    preprocess_seconds = time.perf_counter() - started
    pixel_size = stack.pixel_size * stack.box / size
    method = get_method(config.method)
    if hasattr(method, "set_optics"):
        flipped = config.flips_phase and stack.ctf is not None
        method.set_optics(stack.ctf, pixel_size, flipped, config.mask_diameter)
    return _Run(
        stack,
        config,
        out_dir,
        images,
        pixel_size,
        method,
        _averager(config, method),
        torch.Generator(device=device),
        on_event,
        device,
        size,
        started,
        preprocess_seconds,
        full_size_fits=fit.full_size > 0,
        pending_timings={"preprocess": preprocess_seconds},
    )


FULL_SIZE_FILE = outputs.FULL_SIZE_FILE


def _full_size_averages(run: _Run, last_round: int, labels: np.ndarray, on_notice) -> dict | None:
    """The last round's class averages at the input's box and pixel size, into the round's folder
    and OUT/, for every method: the averager's own (pose method: poses; aligned averages: the
    in-plane alignments; reference: plain means) applied to the full-size particles, normalised
    and phase-flipped as at the model size. Only the last round gets them: reading the stack
    again at full size costs as much as the first preprocessing. The round's PNG gallery is
    redrawn from them. Returns their box and pixel size for summary.json, or None when the
    particles do not fit in FULL_SIZE_BYTES (a notice says so)."""
    from worker.engine.io.mrc import write_stack

    stack, k = run.stack, run.config.cluster_num
    if last_round == 0:  # round 0's averages are plain means of the initial classes, at the model size
        return None
    box = model_size(stack.box, stack.box)  # an odd box loses one pixel, as at the model size
    pixel_size = stack.pixel_size * stack.box / box
    found = {"file": FULL_SIZE_FILE, "box": box, "pixel_size": pixel_size}
    folder = outputs.round_dir(run.out_dir, last_round)
    round_file = folder / FULL_SIZE_FILE
    if round_file.is_file() and (run.out_dir / FULL_SIZE_FILE).is_file():
        return found  # a run resumed after it had finished
    if box == run.images.shape[-1]:  # the model size is the box: the round's averages are full size
        for target in (round_file, run.out_dir / FULL_SIZE_FILE):
            outputs.copy_file(folder / "class_averages.mrcs", target)
        return found
    if len(stack) * box * box * STORAGE_BYTES[run.config.storage] > FULL_SIZE_BYTES or not run.full_size_fits:
        if on_notice:
            on_notice(
                f"no full-size class averages: {len(stack):,} particles of {box} px exceed the memory set aside"
            )
        return None
    if run.averaged_round != last_round:  # resumed after the last round: its alignments again
        run.averager.average(run.images, labels, k)
    full = preprocess(
        stack,
        box,
        run.images.device,
        before_normalise=_phase_flipper(stack, run.config, run.images.device),
        dtype=STORAGE_DTYPES[run.config.storage],
    )
    averages = run.averager.average_at(full, labels, k, pixel_size)
    del full
    classes = _read_json(folder / "classes.json")
    # The gallery first: a run stopped before the .mrcs files redraws it when resumed.
    png = outputs.gallery(averages, classes, run.pixel_size, stack.pixel_size_known)
    outputs.write_bytes(folder / "class_averages.png", png)
    write_stack(round_file, averages, pixel_size)
    write_stack(run.out_dir / FULL_SIZE_FILE, averages, pixel_size)
    return found


def _stop_reason(config: ClassifyConfig, info: dict) -> str | None:
    churn = info.get("churn")
    if churn is None:
        return None
    return stop_reason(churn, config.stop_when_churn_below, info["round"])


@dataclass
class _Initial:
    """The initial classes: PCA of the pixels, then KMeans on the PCA features."""

    features: np.ndarray  # (N, min(components, EMBEDDING_DIM)) float32, the leading ones
    seconds: float


def _resume(run: _Run) -> tuple[list[int], list[dict], np.ndarray, _Initial | None]:
    """Rounds already complete, their round.json, the labels (and method state) to go on from,
    and the initial classes' PCA features when they were computed here (no round was complete)."""
    done = outputs.completed_rounds(run.out_dir)
    rounds = [_read_json(outputs.round_dir(run.out_dir, r) / "round.json") for r in done]
    if not done:
        labels, initial = _initial_labels(run)
        return done, rounds, labels, initial
    last = outputs.round_dir(run.out_dir, done[-1])
    state = last / STATE_FILE
    if hasattr(run.method, "load_state") and state.is_file():
        with np.load(state) as arrays:
            run.method.load_state(dict(arrays), run.images.device)
    return done, rounds, outputs.read_labels_csv(last / "labels.csv"), None


def _initial_labels(run: _Run) -> tuple[np.ndarray, _Initial]:
    """PCA + KMeans on the pixels: the PCA is fitted on a sample and projects the stack chunk by
    chunk on its device, so no float32 copy of the whole stack is made."""
    started = time.perf_counter()
    features = pca_features(
        run.images[:, 0],
        run.config.seed,
        on_progress=lambda done, total: run.on_event(StageProgress(0, "initial labels", done, total)),
    )
    labels = kmeans_labels(features, run.config.cluster_num, run.config.seed, run.images.device)
    kept = features[:, :EMBEDDING_DIM].copy()  # what round 0 writes; the rest goes now
    return labels, _Initial(kept, time.perf_counter() - started)


def _round_zero(run: _Run, labels: np.ndarray, initial: _Initial) -> dict:
    """round_num 0: the initial classes written as round 0 through the normal outputs, a quick
    first look. The embedding is the PCA of the pixels (its first EMBEDDING_DIM components, its
    first two for the scatter), and the averages are the plain class means (a method's own
    averages need the poses of its first round)."""
    k, n = run.config.cluster_num, len(run.stack)
    started = time.perf_counter()
    averages = MeanAverager().average(run.images, labels, k)
    classes = outputs.class_table(labels, k, class_resolutions(run.images, labels, k, run.pixel_size))
    averaged = time.perf_counter()
    layout = _umap_view(run, 0, initial.features[:, :EMBEDDING_DIM])  # round 0 is the run's last
    laid_out = time.perf_counter()
    timings = run.stage_timings(averages=averaged - started, **_umap_timing(layout, laid_out - averaged))
    info = {
        "round": 0,
        "counts": [row["count"] for row in classes],
        "churn": None,
        "loss": None,
        "seconds": initial.seconds + laid_out - started,
        "timings": timings,
    }
    flat = np.zeros((n, 2), dtype=np.float32)  # two columns even when the PCA kept one
    flat[:, : min(2, initial.features.shape[1])] = initial.features[:, :2]
    outputs.write_round(
        run.out_dir,
        0,
        labels=labels,
        image_names=run.stack.image_names,
        embedding=initial.features[:, :EMBEDDING_DIM],
        embedding_2d=flat,
        embedding_umap=layout,
        averages=averages,
        pixel_size=run.pixel_size,
        pixel_size_known=run.stack.pixel_size_known,
        classes=classes,
        loss=[],
        info=info,
    )
    run.on_event(RoundDone(0, 0, info["counts"], info["seconds"], None, timings, None))
    return info


def _umap_view(run: _Run, r: int, embedding: np.ndarray) -> np.ndarray | None:
    """The UMAP layout of round r's embedding when the job asks for one (its last round only:
    numba compiles umap on first use, tens of seconds, and the earlier rounds keep their PCA)."""
    if not run.config.umap:
        return None
    return umap_2d(
        embedding,
        run.config.seed,
        on_progress=lambda done, total: run.on_event(StageProgress(r, "umap", done, total)),
    )


def _umap_timing(layout: np.ndarray | None, seconds: float) -> dict[str, float]:
    return {} if layout is None else {"umap": seconds}


def _one_round(run: _Run, r: int, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Train/embed, KMeans, averages; write round r into its folder. Returns (labels, round.json)."""
    config, n, k = run.config, len(run.stack), run.config.cluster_num
    round_started = time.perf_counter()
    # Seeds per round, so a resumed run repeats exactly what an unbroken one would do.
    run.generator.manual_seed(config.seed * 100_003 + r)
    losses: list[dict] = []

    def record(event: Event) -> None:
        if isinstance(event, LossPoint):
            losses.append(
                {"epoch": event.epoch, "step": event.step, "pairs_done": event.pairs_done, "loss": event.loss}
            )
        run.on_event(event)

    epochs = run.method.epochs(config) if hasattr(run.method, "epochs") else config.epoch_num
    run.on_event(RoundStarted(r, config.round_num, epochs * n, epochs))
    embedding, state = run.method.train_round(run.images, labels, config, r, run.generator, record)
    trained = time.perf_counter()
    previous = labels
    labels = kmeans_labels(embedding, k, config.seed + r, run.images.device)
    churn = label_churn(previous, labels)
    last = r == config.round_num or stop_reason(churn, config.stop_when_churn_below, r) is not None
    # Only the last round gives the boxes that look empty a class: a class of junk would give the
    # next round's EM a reference of junk to start from.
    empty = run.method.empty_rows() if hasattr(run.method, "empty_rows") else None
    empty_class = None
    if last and empty is not None:
        labels, empty_class = with_empty_class(
            embedding, labels, empty, k, config.seed + r, run.images.device
        )
    clustered = time.perf_counter()
    refine_timing: dict[str, float] = {}
    if last and hasattr(run.method, "refine_labels"):
        # The likelihood step on the last round's classes (worker/engine/pose.py, item 5).
        labels = run.method.refine_labels(
            labels,
            k,
            empty_class,
            config.seed + r,
            on_iteration=lambda done, total: run.on_event(StageProgress(r, "refine", done, total)),
        )
        refine_timing = {"refine": time.perf_counter() - clustered}
    averaging = time.perf_counter()
    averages = run.averager.average(run.images, labels, k)
    run.averaged_round = r
    classes = outputs.class_table(
        labels,
        k,
        _class_quality(run.images, labels, k, run.pixel_size, run.averager),
        run.pixel_size,
        empty_class,
    )
    averaged = time.perf_counter()
    layout = _umap_view(run, r, embedding) if last else None
    laid_out = time.perf_counter()
    timings = run.stage_timings(
        train_embed=trained - round_started,
        kmeans=clustered - trained,
        **refine_timing,
        averages=averaged - averaging,
        **_umap_timing(layout, laid_out - averaged),
    )
    info = {
        "round": r,
        "counts": [row["count"] for row in classes],
        "churn": churn,
        "loss": state["loss"],
        "empty_class": empty_class,  # the class of boxes that look empty, if one was made
        "empty_boxes": int(empty.sum()) if empty is not None else 0,
        **(run.method.round_scores() if hasattr(run.method, "round_scores") else {}),
        "seconds": laid_out - round_started,
        "timings": timings,
    }
    extra = {STATE_FILE: run.method.state_arrays()} if hasattr(run.method, "state_arrays") else None
    outputs.write_round(
        run.out_dir,
        r,
        labels=labels,
        image_names=run.stack.image_names,
        embedding=embedding,
        embedding_2d=project_2d(embedding, config.seed),
        embedding_umap=layout,
        averages=averages,
        pixel_size=run.pixel_size,
        pixel_size_known=run.stack.pixel_size_known,
        classes=classes,
        loss=losses,
        info=info,
        extra=extra,
    )
    if "network" in state:
        _save_weights(run.out_dir / "model.pt", state["network"], r)
    scores = {key: info[key] for key in SCORE_KEYS if key in info}
    run.on_event(
        RoundDone(r, config.round_num, info["counts"], info["seconds"], state["loss"], timings, churn, scores)
    )
    return labels, info


def _summary(run: _Run, rounds: list[dict], stopped: str | None, full_size: dict | None) -> dict:
    return {
        "parameters": run.config.to_dict(),
        "device": str(run.device),
        "particles": len(run.stack),
        "box": run.stack.box,
        "model_size": run.size,
        "pixel_size": run.stack.pixel_size,
        "pixel_size_known": run.stack.pixel_size_known,  # false: pixel_size is a 1 Å/px stand-in
        "preprocess_seconds": run.preprocess_seconds,
        "rounds": rounds,
        "total_seconds": time.perf_counter() - run.started,
        "device_peak_bytes": _device_peak_bytes(run.device),
        "version": __version__,
        "stopped": stopped,
        "full_size_averages": full_size,
    }


def _device_peak_bytes(device: torch.device) -> int | None:
    """The most GPU memory torch held at once during this run (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _save_weights(path: Path, network: torch.nn.Module, round_index: int) -> None:
    with temporary_sibling(path) as tmp:
        torch.save({"round": round_index, "state_dict": network.state_dict()}, tmp)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())
