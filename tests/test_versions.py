"""The supported Ray range, and every place that names a Ray release, agree (no Ray runtime needed).

- pyproject.toml: one range for every Ray requirement (the package and its extras);
- Makefile: RAY_OLDEST, what `make test-ray-oldest` installs, is the range's lower bound;
- cluster/ray-version: the release the cluster recipes run, inside the range; the KubeRay
  manifest (rayVersion, image tags) and the docs name that release and no other.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
# Ray's releases of the six months before this range was set (2026-06-02 to 2026-12-02, PyPI upload dates):
# 2.56.0 06-29, 2.56.1 07-17, 2.57.0 08-11, 2.58.0 08-23, 2.59.0 10-02, 2.57.1 and 2.58.1 10-21, 2.60.0 11-04.
RECENT_RELEASES = ["2.56.0", "2.56.1", "2.57.0", "2.57.1", "2.58.0", "2.58.1", "2.59.0", "2.60.0"]
DOCS = [REPO / "README.md", REPO / "docs" / "cluster.md", CLUSTER / "README.md", CLUSTER / "rayjob.yaml"]


def ray_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    every = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [req for req in map(Requirement, every) if req.name == "ray"]


def ray_range():
    (specifier,) = {req.specifier for req in ray_requirements()}
    return specifier


def lower_bound() -> str:
    (bound,) = [spec.version for spec in ray_range() if spec.operator == ">="]
    return bound


def cluster_version() -> str:
    return (CLUSTER / "ray-version").read_text().strip()


def test_every_ray_requirement_has_the_same_range_and_none_pins_one_release():
    assert len(ray_requirements()) == 3  # the package, and its serve and test extras
    assert all(spec.operator not in ("==", "===", "~=") for spec in ray_range())


def test_the_range_holds_every_ray_release_of_the_six_months_before_it_was_set():
    assert all(ray_range().contains(release) for release in RECENT_RELEASES)
    assert not ray_range().contains("3.0.0")


def test_make_test_ray_oldest_installs_the_lower_bound():
    oldest = re.search(r"^RAY_OLDEST := (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert oldest == lower_bound()
    assert Version(oldest) <= Version(RECENT_RELEASES[0])


def test_the_docs_state_the_range():
    assert f"any Ray from {lower_bound()} " in (REPO / "docs" / "cluster.md").read_text()


def test_the_cluster_recipes_run_a_release_of_the_range():
    assert re.fullmatch(r"\d+\.\d+\.\d+", cluster_version())
    assert ray_range().contains(cluster_version())


def test_the_kuberay_manifest_runs_the_release_in_cluster_ray_version():
    cluster = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == cluster_version()
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    images = [c["image"] for group in groups for c in group["template"]["spec"]["containers"]]
    assert images and all(image.startswith(f"rayproject/ray:{cluster_version()}-") for image in images)


def test_docs_name_no_other_ray_release():
    pinned = re.compile(r"rayproject/ray:(\d+\.\d+\.\d+)|rayVersion: \"(\d+\.\d+\.\d+)\"|\bray(?:\[[a-z,]+\])?==(\d+\.\d+\.\d+)")
    for path in DOCS:
        for match in pinned.finditer(path.read_text()):
            assert next(filter(None, match.groups())) == cluster_version(), f"{path.name}: {match.group(0)}"
