"""Commands that talk to a running cryoclust server over HTTP (through cryoclust.client)."""
