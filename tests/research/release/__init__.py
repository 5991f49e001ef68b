"""Tests of the release engine (research.release): plain pandas and pyarrow, no database."""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# No example database (nothing written to the working tree) and no per-example deadline
# (pandas' first calls are slow to warm up; these are properties, not timings).
PROPERTY = settings(database=None, deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])

keys = st.binary(min_size=16, max_size=80)
