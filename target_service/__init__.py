"""The target service: scores a drafted block in one forward pass."""
