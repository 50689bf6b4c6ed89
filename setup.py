"""Maps the top-level source folders onto `retlink.*` subpackages.

The repository keeps `agents/`, `graphs/`, `tools/` and `eval/` at the top level (see
shared/DESIGN.md), but those generic names must not land in the global import namespace, so
each is installed as `retlink.<name>`. All other metadata lives in pyproject.toml.
"""

from setuptools import find_packages, setup

SUBPACKAGES = ("agents", "graphs", "tools", "eval")

packages = ["retlink", *(f"retlink.{p}" for p in find_packages(include=["retlink.*"]))]
package_dir = {"retlink": "retlink"}
for top in SUBPACKAGES:
    package_dir[f"retlink.{top}"] = top
    packages.append(f"retlink.{top}")
    packages += [f"retlink.{top}.{sub}" for sub in find_packages(where=top)]

setup(packages=packages, package_dir=package_dir)
