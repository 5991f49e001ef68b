"""The synthetic multi-centre cohort: realistic, messy, deterministic, with known ground truth.

`generator` draws one site's cohort as plain pandas frames (no Django); `load` writes them
into the registry's tables with COPY; `extracts` writes them as site extracts. The generating
model is documented in docs/synthetic-cohort.md.
"""
