"""What the partner API answers about the cohort: aggregates and feasibility counts under
disclosure control (docs/partner-api.md).

- `answer`: the shape every partner query's raw result has (`RawAnswer`), and the keyed digest
  of a set of patients that seeds its noise;
- `snapshot`: the analysis snapshot the queries read (built from the bulk reader);
- `aggregates`, `feasibility`: the raw cells of each query over the snapshot;
- `control`: noise, minimum cell, rounding, totals and rates: the only way a number leaves.
The budget, the overlap audit and the query log are research.services.partner_queries.
"""
