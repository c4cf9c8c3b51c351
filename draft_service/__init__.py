"""The draft service: proposes k tokens and the distributions q they were sampled from."""
