"""The API process imports the engine's io and gallery: they must stay free of heavy or web modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ["torch", "fastapi", "celery", "sqlalchemy"]


def test_io_and_gallery_import_no_torch_or_service_modules():
    code = (
        "import json, sys\n"
        "import worker.engine.io, worker.engine.io.particles, worker.engine.gallery\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
