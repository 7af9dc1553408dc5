"""The job parameters are defined once (worker/engine/config.py) and everything agrees with it:
ClassifyConfig, the command line, and no copy of a default anywhere else in the code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from cryoclust.cli import parse_args
from worker.engine.commands.classify import config_from_args
from worker.engine.config import AUTO, BY_NAME, DEFAULT_DEVICE, METHODS, PARAMETERS, ClassifyConfig

ROOT = Path(__file__).resolve().parents[2]


def test_classify_config_has_exactly_the_defined_parameters_with_their_defaults():
    config = ClassifyConfig()
    assert [f.name for f in dataclasses.fields(ClassifyConfig)] == [p.name for p in PARAMETERS]
    for p in PARAMETERS:
        expected = DEFAULT_DEVICE if p.name == "device" else p.default
        assert getattr(config, p.name) == expected, p.name
    assert config.method in METHODS


@pytest.mark.parametrize(
    "name, bad",
    [
        ("cluster_num", 1),
        ("cluster_num", 1001),
        ("learning_rate", 0.0),
        ("epoch_num", 0),
        ("batch_size", 1),
        ("round_num", 101),
        ("size", 33),
        ("size", 4),
        ("seed", -1),
        ("method", "nope"),
        ("precision", "fp8"),
        ("device", "gpu"),
        ("phase_flip", "yes"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_parameter(name, bad):
    with pytest.raises(ValueError, match=rf"invalid classification parameters: {name}={bad!r} \("):
        ClassifyConfig(**{name: bad})


def test_auto_options_follow_the_method_and_explicit_values_win():
    for method in METHODS:
        effective = ClassifyConfig(method=method).resolved("cpu")
        on = method != "reference"
        assert (effective.phase_flip, effective.align_averages, effective.device) == (on, on, "cpu")
    assert ClassifyConfig(method="reference", phase_flip=True).resolved().phase_flip is True
    assert ClassifyConfig(method="invariant", align_averages=False).aligns_averages is False
    # resolving twice changes nothing; no parameter is left undecided but the mask diameter,
    # which the stack's box decides
    once = ClassifyConfig().resolved("cpu")
    undecided = [name for name, value in once.to_dict().items() if value is AUTO]
    assert once.resolved() == once and undecided == ["mask_diameter"]
    assert once.for_stack(64, 2.0).mask_diameter == 108.8  # 85 % of 128 Å
    assert ClassifyConfig(mask_diameter=150.0).for_stack(64, 2.0).mask_diameter == 150.0


def test_cli_defaults_and_flags_come_from_the_definition():
    args = parse_args(["classify", "x.mrcs", "-o", "out"])
    for p in PARAMETERS:
        assert getattr(args, p.name) == p.default, p.name
    assert config_from_args(args) == ClassifyConfig()
    # the original program's flags
    short = ["-c", "7", "-g", "cpu", "-l", "0.001", "-e", "3", "-b", "16", "-r", "2", "-d", "stacks/"]
    args = parse_args(
        ["classify", "-o", "out", *short, "--no-phase-flip", "--align", "--method", "invariant"]
    )
    config = config_from_args(args)
    assert (
        config.cluster_num,
        config.device,
        config.learning_rate,
        config.epoch_num,
        config.batch_size,
        config.round_num,
    ) == (7, "cpu", 0.001, 3, 16, 2)
    assert (config.phase_flip, config.align_averages, config.method, str(args.dataset_dir)) == (
        False,
        True,
        "invariant",
        "stacks",
    )
    assert (
        config_from_args(
            parse_args(["classify", "x.mrcs", "-o", "out", "--mask-diameter", "150"])
        ).mask_diameter
        == 150
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["-c", "1"], "-c/--cluster_num: 1: at least 2"),
        (["--size", "33"], "--size: 33: must be even"),
        (["-g", "gpu"], "cpu, cuda or cuda:N"),
        (["-e", "x"], "'x' is not a valid int"),
        (["--mask-diameter", "0"], "--mask-diameter: 0: must be above 0"),
    ],
)
def test_cli_refuses_out_of_range_values_with_the_flag_named(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(["classify", "x.mrcs", "-o", "out", *flags])
    assert message in capsys.readouterr().err


def _literals(value) -> set[str]:
    """How a default can be spelled in Python or JavaScript source."""
    if isinstance(value, bool) or value is None:
        return set()  # true/false/None are everywhere; auto ones are checked by name below
    if isinstance(value, str):
        return {f'"{value}"', f"'{value}'"}
    spelled = {repr(value), f"{value:g}", f"{value:.0e}", f"{value:.0e}".replace("e-0", "e-")}
    return {s for s in spelled if s}


# Parameters of other things that share a job parameter's name.
OTHER_MEANINGS = {
    "worker/engine/gallery.py": "size: the size of a thumbnail",
    "worker/engine/simulate.py": "seed: the simulation's own seed",
    "worker/engine/commands/simulate.py": "seed: the simulation's own seed",
    "worker/engine/bench_methods.py": "the benchmark's own settings",
    "worker/engine/bench_suite.py": "the benchmark's own settings",
    "worker/engine/aspire_child.py": "seed: the ASPIRE anchor's own seed",
    "worker/engine/bench_speed.py": "the benchmark's own settings",
    "worker/engine/bench_scale.py": "seed: the simulated stack's own seed",
    "worker/engine/bench_flops.py": "seed: the benchmark's random particles",
    "worker/engine/commands/bench.py": "the benchmark's own settings",
    "frontend/js/gallery.js": "size: the size of a thumbnail",
    "frontend/js/datasets.js": "size: the size of a thumbnail",
}


def _assignments(name: str, literal: str) -> re.Pattern:
    """`name = 4`, `name: int = 4`, `name: 4` (dicts, JavaScript), `"--name", ..., default=4`."""
    lit = rf"{re.escape(literal)}(?![\w.])"
    return re.compile(
        rf"\b{name}\b[\"']?\s*(:\s*[\w\[\]| .]+)?\s*[:=]\s*{lit}|--{name}\b.*default\s*=\s*{lit}"
    )


def test_no_default_is_written_anywhere_but_the_definition():
    """The bar of one definition: no module gives a job parameter a default of its own."""
    sources = [
        p
        for folder in ("backend", "cryoclust", "worker", "frontend/js")
        for p in (ROOT / folder).rglob("*")
        if p.suffix in (".py", ".js")
        and p.relative_to(ROOT).as_posix() not in {"worker/engine/config.py", *OTHER_MEANINGS}
    ]
    assert len(sources) > 30
    found = []
    for path in sources:
        text = path.read_text()
        for p in PARAMETERS:
            literals = _literals(p.default) | ({f'"{DEFAULT_DEVICE}"'} if p.name == "device" else set())
            for literal in literals:
                for match in _assignments(p.name, literal).finditer(text):
                    found.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert found == []
    assert "cuda:0" not in (ROOT / "cryoclust/core/settings.py").read_text()
    # The two places that used to hold copies now hold none, not even other values.
    for name in ("backend/schemas.py", "frontend/js/jobform.js"):
        text = (ROOT / name).read_text()
        for p in PARAMETERS:
            assert not re.search(rf"\b{p.name}\b(:[^=\n]*)?\s*=|name: \"{p.name}\"", text), (
                f"{name} defines {p.name} itself"
            )


def test_the_check_above_finds_a_copied_default():
    copies = [
        "cluster_num: int = 4",
        "learning_rate=5e-4",
        f'{{ name: "x", method: "{BY_NAME["method"].default}" }}',  # the default, whichever it is
        'parser.add_argument("-e", "--epoch_num", type=int, default=20)',
    ]
    names = ["cluster_num", "learning_rate", "method", "epoch_num"]
    for copy, name in zip(copies, names):
        p = BY_NAME[name]
        assert any(_assignments(name, lit).search(copy) for lit in _literals(p.default)), copy
    assert not _assignments("size", "64").search("size: int = Query(64, ge=16)")


def test_the_definition_is_complete():
    for p in PARAMETERS:
        assert p.help.endswith(".") and p.label, p.name
        assert (p.default is AUTO) == (p.auto is not None), p.name
        assert p.problem(p.default) is None, p.name
        json = p.to_json()
        assert json["name"] == p.name and json["default"] == p.default
    assert BY_NAME["method"].choices == METHODS
