"""What the test folders (and benchmarks/load.py) share, written once.

    net        free ports, whether a port answers, a clear failure when a service is down
    stacks     tiny real particle stacks written with mrcfile
    databases  SQLite or a private PostgreSQL schema per test; the shared Redis URL
    settings   Settings for a test: its own DATA_DIR and queue, CPU, fast heartbeats
    api        the real API in a thread, uploads, waiting for jobs, the SSE parser
    processes  real child processes: workers, `cryoclust serve`, a private redis-server
    cryosparc  a tiny cryoSPARC export: a .cs file and the stacks it names
    browser    Debian's chromium and the flags the page tests launch it with

Test modules import from here (never from each other); tests/conftest.py holds the fixtures.
"""
