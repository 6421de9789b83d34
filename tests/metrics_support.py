"""Reading ``GET /metrics`` in tests: samples by name and labels, and differences between scrapes."""

from __future__ import annotations

import dataclasses

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclasses.dataclass
class Scrape:
    """One scrape's samples, keyed by sample name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: set[str]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        families = set()
        for family in text_string_to_metric_families(text):
            families.add(family.name)
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(samples, families)

    def get(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when it is absent (a counter not counted yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def sum(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, have), value in self.samples.items()
            if sample == name and wanted <= have
        )

    def since(self, before: Scrape, name: str, **labels: str) -> float:
        """How much the sample grew since ``before``."""
        return self.get(name, **labels) - before.get(name, **labels)


async def scrape(http: httpx.AsyncClient, base: str, token: str | None = None) -> Scrape:
    """``GET base/metrics``, parsed."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await http.get(f"{base}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return Scrape.parse(r.text)
