"""The classification engine: pure computation, no web, queue or database code."""
