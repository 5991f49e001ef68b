"""The pages benchmark takes enough requests per page for its percentiles to mean something."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from registry.benchmarks import PAGE_SAMPLES, _spread, pages_benchmark


def test_too_few_samples_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="at least 100 requests per page"):
        pages_benchmark(patients=10, samples=PAGE_SAMPLES - 1)


def test_the_command_refuses_too_few_samples_and_samples_where_none_are_taken():
    with pytest.raises(CommandError, match="at least 100 requests per page"):
        call_command("benchmark", "pages", "--patients", "10", "--samples", "20")
    with pytest.raises(CommandError, match="benchmark seed takes no --samples"):
        call_command("benchmark", "seed", "--patients", "10", "--samples", "200")


@pytest.mark.parametrize(("samples", "urls"), [(100, 1), (100, 3), (100, 5), (100, 100),
                                               (100, 40), (250, 3)])
def test_samples_spread_over_a_pages_urls_add_up(samples, urls):
    spread = _spread(samples, [f"/u{i}" for i in range(urls)])
    assert sum(n for _, n in spread) == samples
    assert max(n for _, n in spread) - min(n for _, n in spread) <= 1
    assert len(spread) == min(samples, urls)
