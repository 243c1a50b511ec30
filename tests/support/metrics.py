"""Scrapes of a /metrics endpoint, read with the Prometheus client's own parser."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, tuple[tuple[str, str], ...]]
README = Path(__file__).resolve().parents[2] / "README.md"


class Scrape:
    """One scrape: every sample by (name, sorted labels), and the families' names and types."""

    def __init__(self, text: str) -> None:
        self.values: dict[Sample, float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.values[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels: str) -> float:
        """The sum over the samples of `name` whose labels include `labels` (0 when none)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and wanted <= set(ls))

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(ls)[label] for (n, ls) in self.values if n == name and label in dict(ls)}


async def scrape(session: aiohttp.ClientSession, url: str) -> Scrape:
    async with session.get(url) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain")
        return Scrape(await r.text())


def documented_series() -> dict[str, str]:
    """The README's metrics table: series name -> type."""
    table = README.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(deduction_\w+)` \| (\w+) \|", table, re.MULTILINE))
