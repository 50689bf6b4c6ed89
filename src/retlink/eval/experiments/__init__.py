"""One-off experiments on eval runs (probes, threshold choosers): not part of the runner."""
