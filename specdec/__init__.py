"""specdec: speculative decoding served as gRPC microservices.

This package is the library the three services share: sampling and the accept/correct
math, model loading, the wire format, gRPC plumbing and the command line.
"""
