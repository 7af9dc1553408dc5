"""The engine stays free of web and queue code (a fresh interpreter for each check)."""

import subprocess
import sys

import pytest

ENGINE_MODULES = [
    "worker.engine.pipeline",
    "worker.engine.commands.classify",
    "worker.engine.commands.simulate",
    "worker.engine.commands.bench",
    "worker.engine.bench_speed",
    "worker.engine.bench_scale",
    "worker.engine.bench_estimate",
]


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_imports_no_web_queue_or_database_code(module):
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in ('fastapi', 'celery', 'sqlalchemy', 'backend', 'uvicorn') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_cli_help_imports_no_command_module():
    code = "import sys; from cryoclust.cli import build_parser; build_parser(); print('torch' in sys.modules, 'fastapi' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False False"
