"""Fuzz suite profiles (hypothesis): every parser of outside input either returns a result or
raises a typed `RetlinkError`, never another exception and never a hang.

- `ci` (the default, what `make test` runs): few examples per parser, derandomised (the same
  seeds on every run, so CI is deterministic), no example database; the whole suite stays well
  inside CI's budget on 2 cores.
- `fuzz` (`make fuzz`): many examples, random seeds, failures saved in `.hypothesis/` and
  replayed first on the next run. Set `RETLINK_FUZZ_EXAMPLES` to scale it.

Hangs are bounded by pytest-timeout on each test (a per-example hypothesis deadline would be
flaky on shared cores); the parsers' own limits keep each example small.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
             HealthCheck.filter_too_much]

settings.register_profile(
    "ci", max_examples=40, derandomize=True, database=None, deadline=None, suppress_health_check=_SUPPRESS,
    print_blob=True,
)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("RETLINK_FUZZ_EXAMPLES", "5000")), deadline=None,
    suppress_health_check=_SUPPRESS, print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
