"""k-anonymity of a release's patient table: global recoding, then local suppression.

Each quasi-identifier has a generalisation hierarchy: level 0 is the value as recorded, each
next level coarser (exact age -> 5-year band -> 10-year band), the last level "*" for every
value. `k_anonymise` chooses one level per quasi-identifier for all rows: of the combinations
of levels that leave at most `max_suppressed` of the rows in groups rarer than k, the one that
loses the least information. Those rows then have every quasi-identifier set to "*".
Information lost is the loss metric of Iyengar (2002), as ARX reports it: for each
quasi-identifier, the mean over rows of (values merged into the row's generalised value - 1) /
(distinct values - 1), 0 as recorded and 1 at "*"; summed over the quasi-identifiers (exact
fractions, so ties are ties). Ties are broken by fewer suppressed records, more groups, fewer
levels climbed, then the lower levels in the order the quasi-identifiers were given, so a
rebuild chooses the same.

Level functions are applied value by value (to the distinct values of a column), and each
level must be a function of the one before it (checked), so a coarser level only ever merges
groups: the records in small groups can only fall as levels rise, and the loss only grow.

Quasi-identifier values leave as text (a "string" column); a missing value is a value of its
own until the top level.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd

from research.release.deid import AGE_TOP

SUPPRESSED = "*"
MIN_K = 2
MAX_K = 1000
# The lattice of level combinations is searched in full; more nodes than this is a request
# for too many quasi-identifiers, not something to wait for.
MAX_LATTICE_NODES = 5_000
_MAX_DENSE_KEYS = 1 << 22
_MAX_KEY = 1 << 62

Level = Callable[[pd.Series], pd.Series]


@dataclass(frozen=True)
class Hierarchy:
    """The generalisation levels of one quasi-identifier: level 0 the value as recorded, the
    last "*" for every value. `labels` names each level for people (the report, the README)."""

    name: str
    levels: tuple[Level, ...]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.levels) < 2:
            raise ValueError(
                f"Hierarchy {self.name!r} needs at least two levels (as recorded, and '*').")
        if self.labels and len(self.labels) != len(self.levels):
            raise ValueError(
                f"Hierarchy {self.name!r} has {len(self.levels)} levels and "
                f"{len(self.labels)} labels.")

    @property
    def top(self) -> int:
        return len(self.levels) - 1

    def label(self, level: int) -> str:
        if self.labels:
            return self.labels[level]
        return SUPPRESSED if level == self.top else f"{self.name} level {level}"


def _text(value: object) -> str | None:
    """A generalised value as it leaves: text, or None when missing."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _valuewise(function: Callable[[object], object]) -> Level:
    """A level that generalises each distinct value with `function`; missing stays missing."""

    def level(values: pd.Series) -> pd.Series:
        mapping = {value: function(value) for value in values.dropna().unique()}
        return values.map(mapping).astype(object)

    return level


def _as_recorded(values: pd.Series) -> pd.Series:
    return values


def _everything_suppressed(values: pd.Series) -> pd.Series:
    return pd.Series(SUPPRESSED, index=values.index, dtype=object)


def _whole_number(value: object, what: str) -> int:
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"Not {what}: {value!r}.")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not float(value).is_integer():
            raise ValueError(f"Not {what}: {value!r}.")
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(f"Not {what}: {value!r}.")


def _age_band(width: int, top: int) -> Callable[[object], str]:
    def band(value: object) -> str:
        if isinstance(value, str) and value.endswith("+"):
            if _whole_number(value[:-1], "an age") != top:
                raise ValueError(f"An age pooled at {value!r}, not at {top}+.")
            return value
        age = _whole_number(value, "an age")
        if age < 0:
            raise ValueError(f"A negative age: {age}.")
        if age >= top:
            return f"{top}+"
        if width == 1:
            return str(age)
        low = age // width * width
        return f"{low}-{min(low + width - 1, top - 1)}"

    return band


def age_hierarchy(*, top: int = AGE_TOP, name: str = "age") -> Hierarchy:
    """Ages as `deid.age_top_coded` writes them ("57", "90+"): exact -> 5-year band ("55-59",
    "90+") -> 10-year band ("50-59", "90+") -> "*"."""
    return Hierarchy(
        name=name,
        levels=(_valuewise(_age_band(1, top)), _valuewise(_age_band(5, top)),
                _valuewise(_age_band(10, top)), _everything_suppressed),
        labels=("age in years", "5-year band", "10-year band", SUPPRESSED),
    )


def _year(value: object) -> int:
    if isinstance(value, dt.date):
        return value.year
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).year
    return _whole_number(value, "a year")


def _year_band(value: object) -> str:
    low = _year(value) // 5 * 5
    return f"{low}-{low + 4}"


def year_hierarchy(*, name: str = "year") -> Hierarchy:
    """A calendar year (a number, or a date's year) -> 5-year band ("2015-2019") -> "*"."""
    return Hierarchy(
        name=name,
        levels=(_valuewise(_year), _valuewise(_year_band), _everything_suppressed),
        labels=("calendar year", "5-year band", SUPPRESSED),
    )


def _grouping(mapping: dict[str, str], index: int) -> Callable[[object], str]:
    def group(value: object) -> str:
        key = _text(value)
        if key not in mapping:
            raise ValueError(f"Grouping {index} has no group for the value {key!r}.")
        return mapping[key]

    return group


def category_hierarchy(*groupings: dict[str, str], name: str = "category",
                       labels: tuple[str, ...] = ()) -> Hierarchy:
    """A value -> its group in the first grouping -> that group's group in the next ... -> "*"
    (site -> province -> "*"). Groupings are keyed by the value's text; a value a grouping
    does not name is refused when the level is applied."""
    levels: list[Level] = [_as_recorded]
    for number, mapping in enumerate(groupings, start=1):
        previous = levels[-1]
        step = _valuewise(_grouping(dict(mapping), number))
        levels.append(lambda values, previous=previous, step=step: step(previous(values)))
    levels.append(_everything_suppressed)
    labels = labels or ("as recorded", *(f"grouping {i}" for i in range(1, len(groupings) + 1)),
                        SUPPRESSED)
    return Hierarchy(name=name, levels=tuple(levels), labels=labels)


def suppress_only(*, name: str = "value") -> Hierarchy:
    """The value as recorded, or "*" (for sex, say)."""
    return Hierarchy(name=name, levels=(_as_recorded, _everything_suppressed),
                     labels=("as recorded", SUPPRESSED))


def generalise(values: pd.Series, hierarchy: Hierarchy, level: int) -> pd.Series:
    """`values` at one level of `hierarchy`, as text (a "string" Series, same index)."""
    if not 0 <= level <= hierarchy.top:
        raise ValueError(f"Hierarchy {hierarchy.name!r} has no level {level}.")
    out = hierarchy.levels[level](values)
    if len(out) != len(values):
        raise ValueError(f"Level {level} of hierarchy {hierarchy.name!r} changed the row count.")
    texts = np.array([_text(v) for v in out.to_numpy(dtype=object)], dtype=object)
    return pd.Series(texts, index=values.index, name=values.name, dtype="string")


@dataclass
class KReport:
    """What k_anonymise did. `levels`: for each quasi-identifier, the level chosen, its label,
    the top level and the information that level loses (0 to 1); `information_loss` is their
    sum. `generalised_records`: rows with any quasi-identifier changed (suppressed rows
    included); `suppressed_records`: rows with every quasi-identifier set to "*" because their
    combination stayed rarer than k. `groups`, `smallest_group` and `achieved_k` are over the
    rows not suppressed (achieved_k is 0 when none are left)."""

    k: int
    rows: int
    quasi_identifiers: list[str]
    levels: dict[str, dict]
    generalised_records: int
    suppressed_records: int
    groups: int
    smallest_group: int | None
    achieved_k: int
    max_suppressed: float
    information_loss: float = 0.0
    all_suppressed: bool = False
    nodes_examined: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def suppressed_share(self) -> float:
        return self.suppressed_records / self.rows if self.rows else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["suppressed_share"] = round(self.suppressed_share, 6)
        return out


@dataclass
class _Column:
    """One quasi-identifier: codes of its distinct values (level 0 input, missing included)
    and, per level, the text of each distinct value and its code at that level."""

    name: str
    hierarchy: Hierarchy
    codes: np.ndarray  # row -> distinct value
    texts: list[np.ndarray]  # level -> distinct value -> text (None when missing)
    level_codes: list[np.ndarray]  # level -> distinct value -> code at that level
    cardinality: list[int]  # level -> number of codes
    loss: list[Fraction]  # level -> information lost (the loss metric, 0 to 1)


def _column(name: str, values: pd.Series, hierarchy: Hierarchy) -> _Column:
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    distinct = pd.Series(np.asarray(uniques, dtype=object), dtype=object)
    texts, level_codes, cardinality, loss = [], [], [], []
    rows_per_value = np.bincount(codes, minlength=len(distinct))
    for level in range(len(hierarchy.levels)):
        text = generalise(distinct, hierarchy, level).to_numpy(dtype=object, na_value=None)
        text = text.astype(object)
        level_code, level_uniques = pd.factorize(
            pd.Series(text, dtype=object), use_na_sentinel=False)
        texts.append(text)
        level_codes.append(level_code.astype(np.int64))
        cardinality.append(max(len(level_uniques), 1))
        loss.append(_level_loss(level_codes[0], level_code, rows_per_value))
    if len(distinct) and not all(t == SUPPRESSED for t in texts[-1]):
        raise ValueError(f"The last level of hierarchy {hierarchy.name!r} is not all '*'.")
    for level in range(1, len(texts)):
        seen: dict[object, object] = {}
        for finer, coarser in zip(texts[level - 1], texts[level], strict=True):
            if seen.setdefault(finer, coarser) != coarser:
                raise ValueError(
                    f"Level {level} of hierarchy {hierarchy.name!r} splits {finer!r} of level "
                    f"{level - 1} into {seen[finer]!r} and {coarser!r}.")
    return _Column(name, hierarchy, codes.astype(np.int64), texts, level_codes, cardinality,
                   loss)


def _level_loss(recorded: np.ndarray, generalised: np.ndarray,
                rows_per_value: np.ndarray) -> Fraction:
    """Mean over rows of (recorded values merged into the row's generalised value - 1) /
    (recorded values - 1). `recorded` and `generalised` are the codes of each distinct value."""
    if len(recorded) == 0:
        return Fraction(0)
    pairs = np.unique(np.stack([generalised, recorded]), axis=1)
    merged = np.bincount(pairs[0], minlength=generalised.max() + 1)  # recorded per generalised
    values = int(recorded.max()) + 1
    if values < 2:
        return Fraction(0)
    numerator = int(((merged[generalised] - 1) * rows_per_value).sum())
    return Fraction(numerator, int(rows_per_value.sum()) * (values - 1))


def _group_keys(columns: list[_Column], node: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Each row's combination of codes at `node`, as one integer below the returned bound."""
    key = np.zeros(len(columns[0].codes), dtype=np.int64)
    bound = 1
    for column, level in zip(columns, node, strict=True):
        cardinality = column.cardinality[level]
        if bound * cardinality >= _MAX_KEY:
            key, uniques = pd.factorize(key)
            bound = len(uniques)
        key = key * cardinality + column.level_codes[level][column.codes]
        bound *= cardinality
    if bound > max(_MAX_DENSE_KEYS, 4 * len(key)):
        key, uniques = pd.factorize(key)
        bound = len(uniques)
    return key, bound


def _loss(columns: list[_Column], levels: tuple[int, ...]) -> Fraction:
    return sum((c.loss[level] for c, level in zip(columns, levels, strict=True)), Fraction(0))


@dataclass(frozen=True)
class _Node:
    levels: tuple[int, ...]
    small_records: int
    groups: int
    loss: Fraction


def _examine(columns: list[_Column], levels: tuple[int, ...], k: int) -> _Node:
    key, bound = _group_keys(columns, levels)
    counts = np.bincount(key, minlength=bound)
    counts = counts[counts > 0]
    small = counts < k
    return _Node(levels, int(counts[small].sum()), int((~small).sum()), _loss(columns, levels))


def _lattice(columns: list[_Column]) -> list[tuple[int, ...]]:
    ranges = [range(len(c.hierarchy.levels)) for c in columns]
    nodes = math.prod(len(r) for r in ranges)
    if nodes > MAX_LATTICE_NODES:
        raise ValueError(
            f"{len(columns)} quasi-identifiers give {nodes} combinations of levels; at most "
            f"{MAX_LATTICE_NODES} are searched. Fewer quasi-identifiers or shorter "
            "hierarchies are needed.")
    return sorted(itertools.product(*ranges),
                  key=lambda levels: (_loss(columns, levels), sum(levels), levels))


def _rank(node: _Node) -> tuple:
    return (node.loss, node.small_records, -node.groups, sum(node.levels), node.levels)


def _choose(columns: list[_Column], k: int, allowed: int) -> tuple[_Node | None, int]:
    """The least generalised node whose small-group records are at most `allowed`, with the
    tie-breaks of the module's docstring; None when even the top fails. Also the number of
    nodes examined."""
    examined = 0
    best: _Node | None = None
    for levels in _lattice(columns):
        node = _examine(columns, levels, k)
        examined += 1
        if best is not None and node.loss > best.loss:
            break
        if node.small_records <= allowed and (best is None or _rank(node) < _rank(best)):
            best = node
    return best, examined


def _check_arguments(frame: pd.DataFrame, quasi: dict[str, Hierarchy], k: int,
                     max_suppressed: float) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not MIN_K <= k <= MAX_K:
        raise ValueError(f"k must be a whole number from {MIN_K} to {MAX_K}, not {k!r}.")
    if (isinstance(max_suppressed, bool) or not isinstance(max_suppressed, int | float)
            or not math.isfinite(max_suppressed) or not 0 <= max_suppressed <= 1):
        raise ValueError(
            f"max_suppressed must be a share from 0 to 1, not {max_suppressed!r}.")
    missing = [name for name in quasi if name not in frame.columns]
    if missing:
        raise ValueError(f"The frame has no column {', '.join(map(repr, missing))}.")
    for name, hierarchy in quasi.items():
        if not isinstance(hierarchy, Hierarchy):
            raise TypeError(f"The quasi-identifier {name!r} needs a Hierarchy.")


def _level_entry(hierarchy: Hierarchy, level: int, loss: Fraction) -> dict:
    return {"level": level, "label": hierarchy.label(level), "top": hierarchy.top,
            "loss": round(float(loss), 6)}


def k_anonymise(frame: pd.DataFrame, quasi: dict[str, Hierarchy], *, k: int = 5,
                max_suppressed: float = 0.05) -> tuple[pd.DataFrame, KReport]:
    """The patient table (one row per patient) made k-anonymous on the `quasi` columns, and
    the report of what was done.

    One level per quasi-identifier is chosen for all rows (see the module's docstring); rows
    whose combination is still rarer than k then have every quasi-identifier set to "*". Every
    combination of the result occurs at least k times or is fully suppressed; when even "*"
    everywhere leaves fewer than k rows, every row is suppressed. The result has the frame's
    index, row and column order; quasi-identifier columns are text, the others untouched.
    """
    _check_arguments(frame, quasi, k, max_suppressed)
    names = list(quasi)
    rows = len(frame)
    report = KReport(
        k=int(k), rows=rows, quasi_identifiers=names, levels={}, generalised_records=0,
        suppressed_records=0, groups=0, smallest_group=None, achieved_k=0,
        max_suppressed=float(max_suppressed))
    out = frame.copy()
    if not names:
        report.notes.append("No quasi-identifiers: the table is unchanged.")
        return out, report
    if rows == 0:
        for name, hierarchy in quasi.items():
            out[name] = generalise(frame[name], hierarchy, 0)
            report.levels[name] = _level_entry(hierarchy, 0, Fraction(0))
        report.notes.append("No rows.")
        return out, report

    columns = [_column(name, frame[name], quasi[name]) for name in names]
    allowed = math.floor(max_suppressed * rows + 1e-9)
    node, report.nodes_examined = _choose(columns, k, allowed)
    chosen = node.levels if node else tuple(c.hierarchy.top for c in columns)
    key, bound = _group_keys(columns, chosen)
    counts = np.bincount(key, minlength=bound)
    suppressed = counts[key] < k
    if node is None:
        report.all_suppressed = True
        report.notes.append(
            f"Only {rows} rows: fewer than k = {k} even with every quasi-identifier '*'; "
            "every row is suppressed.")

    changed = np.zeros(rows, dtype=bool)
    for column, level in zip(columns, chosen, strict=True):
        text = column.texts[level][column.codes]
        text[suppressed] = SUPPRESSED
        changed |= text != column.texts[0][column.codes]
        out[column.name] = pd.Series(text, index=frame.index, name=column.name,
                                     dtype="string")
        report.levels[column.name] = _level_entry(column.hierarchy, level, column.loss[level])
    report.information_loss = round(float(_loss(columns, chosen)), 6)
    report.generalised_records = int(changed.sum())
    report.suppressed_records = int(suppressed.sum())
    sizes = np.bincount(key[~suppressed], minlength=bound)
    sizes = sizes[sizes > 0]
    if len(sizes):
        report.groups = int(len(sizes))
        report.smallest_group = report.achieved_k = int(sizes.min())
    return out, report
