"""The benchmark: `specdec bench` (specdec against plain decoding and transformers, side by side, on
the packaged prompt set dev.jsonl), and two offline tools, rpc_floor (what a gRPC step costs beyond
the server's work) and adaptive_k_replay (adaptive k against fixed k over recorded acceptance)."""
