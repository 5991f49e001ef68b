"""The release engine: de-identification and the files of a release, in plain pandas, pyarrow
and the standard library (no Django), so that it is tested fast and alone.

- deid: study-specific pseudonyms (HMAC under a per-release key), dates as days from the
  patient's index date, top-coded ages
- kanon: generalisation hierarchies of quasi-identifiers and k-anonymity by global recoding
  plus local suppression, with a report of what was changed
- files: a release folder written deterministically (CSV zip, Parquet per table, text files,
  manifest.json of SHA-256 last), and its verification
- codebook: the bilingual codebook (codebook.csv, codebook.md, concepts.csv)
"""
