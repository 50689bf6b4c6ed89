"""The linking graph's nodes: pure functions, state in, partial state out."""
