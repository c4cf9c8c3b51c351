"""The library the three services share, and all of it runs inside a service: logits processing
(sampling), the accept/correct step (speculative), n-gram proposals (ngram), the wire format of
distributions (wire), the prefix-cached LM (cached_lm), model loading (models, hosted_model),
request checks (validation), errors and their statuses (errors), gRPC serving plumbing (serving),
tracing (telemetry) and the model services' metrics (service_metrics). See docs/design.md."""
