"""Load conformance vectors kept as data files under tests/data/vectors."""

from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).parent / "data" / "vectors"


def path(name: str) -> Path:
    return VECTORS / name


def expected_coefficients(name: str) -> list[str]:
    """One coefficient per input event, from ``NAME.expected``."""
    return path(f"{name}.expected").read_text().split()


def summary(name: str) -> dict[str, str]:
    """``key value`` lines of ``NAME.summary``."""
    pairs = (line.split(None, 1) for line in path(f"{name}.summary").read_text().splitlines())
    return {k: v.strip() for k, v in pairs}


def trajectories() -> list[str]:
    """Every trajectory that ships ``.expected`` and ``.summary`` files."""
    return sorted(
        p.name.removesuffix(".expected")
        for p in VECTORS.glob("*.expected")
        if (VECTORS / p.name.replace(".expected", ".summary")).exists()
    )


def scenario_file(name: str) -> dict[str, list[str]]:
    """``X.key value`` lines of an expected-scenarios file, grouped by ``X.key``."""
    out: dict[str, list[str]] = {}
    for line in path(name).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        out.setdefault(key, []).append(value.strip())
    return out
