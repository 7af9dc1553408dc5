"""One router per resource; backend.app mounts them under /api."""
