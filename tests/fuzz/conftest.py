"""Fuzz suite profiles (hypothesis): every parser of outside input either returns a result or
raises a typed `RetlinkError`, never another exception and never a hang.

- `ci` (the default, what `make test` runs): few examples per parser, derandomised (the same
  seeds on every run, so CI is deterministic), no example database; the whole suite stays well
  inside CI's budget on 2 cores.
- `fuzz` (`make fuzz`, scripts/fuzz.sh): random seeds, failures saved in `.hypothesis/` and
  replayed first on the next run. `RETLINK_FUZZ_EXAMPLES` sets the examples per round; the script
  runs rounds until its time is up.

Hangs are bounded by pytest-timeout on each test (a per-example hypothesis deadline would be
flaky on shared cores); the parsers' own limits keep each example small.
"""

from __future__ import annotations

import os

import pytest
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
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def pytest_collection_modifyitems(items):
    """Bound every fuzz test in time (5 minutes in CI, 3 hours for `make fuzz`), and mark them
    slow: each runs many examples, so `make test-fast` leaves them to `make test`."""
    seconds = 300 if PROFILE == "ci" else 3 * 3600
    for item in items:
        if "tests/fuzz/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.timeout(seconds))
            item.add_marker(pytest.mark.slow)
