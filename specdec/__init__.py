"""specdec: speculative decoding served as gRPC microservices.

- specdec.runtime: the library the draft, target and orchestrator services share;
- specdec.v1: the stubs generated from protos/specdec/v1;
- specdec.default_models: the default target (from a PyPI wheel) and the draft shipped for it;
- specdec.cli: the `specdec` command line and the local launcher;
- specdec.bench: the benchmark; specdec.distill: the draft distillation tool.

The services themselves are the top-level packages draft_service, target_service and orchestrator.
See docs/design.md.
"""
