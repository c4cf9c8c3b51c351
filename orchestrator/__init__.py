"""The orchestrator: the speculative loop behind the public Generation API."""
