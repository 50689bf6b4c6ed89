"""MATE (ACL 2025, arXiv 2503.03854): cross-modal entity linking on synthetic 3D scenes.

`scene` (objects, camera, the JSON text), `render` (numpy ray-caster), `questions` (balanced
grid, scoring), `build` (the set on disk and its loader), `prompts`, `harness` (`retlink mate
run`), `report`, `cli`. The binding agent that solves it with tools is `retlink.mate.agent.graph`.
"""
