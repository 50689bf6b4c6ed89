"""Benchmark generators (`retlink data build NAME`), kept apart from the dataset loaders."""
