"""How alike a local word and a concept's name are, for the fuzzy part of mapping suggestions.

Plain Python (no Django), so the rules are tested fast and alone. A reviewer trusts a
suggestion list only when its first entry is the right concept with a clear lead, so the
scoring removes what says nothing about the concept (doses, dosage forms, salts, full width,
case), compares drug names by their INN stem (a typo of pembrolizumab is still a -mab, never
pemetrexed), folds the histology of a diagnosis onto its site (肺腺癌 is a lung cancer in an
ICD-10 topography vocabulary), and reads combination regimens as the set of drugs they name
(培美曲塞+卡铂, 培美曲塞卡铂). `suggestion_margin` says how clear the lead is; `MIN_MARGIN` is
the one bar for approving a suggestion without looking at the others.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz

# The lead the first suggestion must have over the second (or, alone, over the weakest score
# a suggestion can have) before anything approves it without a reviewer choosing: the site's
# auto-approval and the mapping page's bulk approval both read it.
MIN_MARGIN = 0.1

FUZZY_CEILING = 0.9  # a fuzzy match never outranks an exact one (1.0) or a synonym (0.97)
# Below this similarity (0-1) a concept is not suggested at all.
MIN_SIMILARITY = 0.6

# A word of at most this many Latin letters/digits is an abbreviation: it matches a code,
# name or synonym exactly or not at all ("PC" is not "K药+PC" with letters missing).
ABBREVIATION_MAX_LENGTH = 3

LABELLED_SET = Path(__file__).resolve().parent / "data" / "suggestion_labelled_set.csv"

# International Nonproprietary Name stems (WHO): drugs sharing a stem share a class, and a
# typo keeps its stem far more often than it turns into another one.
INN_STEMS = ("mab", "platin", "taxel", "tinib", "rubicin", "citabine", "trexed", "tecan",
             "setron", "grastim", "pitant", "poside", "uracil", "phamide", "asone", "apine")
STEM_BONUS = 0.05
STEM_PENALTY = 0.85  # similarity kept when the two names have different stems
# Similarity kept by a regimen whose drugs differ from those a combination word names: it is
# shown as the nearest, never with a clear margin. A regimen with a drug more than the word
# names pays it twice: a word does not leave out a drug (培美曲塞+卡铂 is not pembrolizumab +
# pemetrexed + carboplatin).
OTHER_DRUGS_PENALTY = 0.75

# Dose, strength and package: "10mg", "0.5 g", "100 mg/m2", "AUC5", "2支".
_DOSE = re.compile(
    r"(?:auc\s*\d+(?:\.\d+)?)|(?:\d+(?:\.\d+)?\s*"
    r"(?:mg/m2|mg/kg|mg|mcg|ug|µg|μg|g|ml|iu|u|万u|支|瓶|粒|片)(?![a-z])"
    r"(?:\s*/\s*\d*(?:\.\d+)?\s*(?:ml|l|支|瓶)(?![a-z]))?)")
# Dosage forms, routes and salts that do not change which drug it is.
_FORMS = re.compile(
    r"\b(?:for\s+injection|injection|inj|infusion|tablets?|tabs?|capsules?|caps|"
    r"hydrochloride|hcl|disodium|sodium|mesylate|iv|po)\b|"
    r"注射用|注射液|注射剂|粉针剂?|冻干粉|胶囊|片剂|缓释片|肠溶片|片|针剂?|"
    r"二钠|磷酸钠|盐酸|甲磺酸|方案|\((?:进口|国产)\)|(?:进口|国产)")
# A diagnosis named with its histology is coded by site in ICD-10 (lung adenocarcinoma: C34).
_HISTOLOGY = (
    (re.compile(r"鳞状细胞癌|鳞癌|腺癌|腺鳞癌|小细胞癌|非小细胞癌"), "癌"),
    (re.compile(r"\b(?:adenocarcinoma|squamous\s+cell\s+carcinoma|small\s+cell\s+carcinoma|"
                r"carcinoma)\b"), "cancer"),
)
# Words that end many adverse-event and diagnosis names: two names sharing only these are
# not alike (白细胞减少 is not 粒细胞减少).
_GENERIC_ENDINGS = ("减少", "降低", "升高", "增高", "癌", "恶性肿瘤", "计数")
# Between the drugs of a regimen: + / 、 , & 联合 和 及 加 with.
_COMBINATION = re.compile(r"\s*(?:\+|/|、|,|&|联合|和|及|加|\bwith\b|\band\b)\s*")
_SEPARATORS = re.compile(r"[\s\-_.,;:()\[\]{}'\"`·•、，。；：（）【】]+")
_WORDS = re.compile(r"[a-z0-9]+")
_CJK = re.compile(r"[\u3400-\u9fff]")


def fold(text: str) -> str:
    """NFKC (full width to half width), case-folded, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())


def strip_dose_and_form(text: str) -> str:
    """The drug or regimen name without dose, form, route or salt ("Pembrolizmab Inj." ->
    "pembrolizmab", "顺铂注射液 10mg" -> "顺铂"); the folded text itself if nothing is left."""
    folded = fold(text)
    stripped = _FORMS.sub(" ", _DOSE.sub(" ", folded))
    stripped = " ".join(stripped.replace(".", " ").split()).strip(" /+,、")
    return stripped or folded


def fold_histology(text: str) -> str:
    """A diagnosis with its histology folded onto its site: 肺腺癌 -> 肺癌."""
    folded = fold(text)
    for pattern, replacement in _HISTOLOGY:
        folded = pattern.sub(replacement, folded)
    return folded


def compact(text: str) -> str:
    """A folded text without spaces and punctuation (case as given: units keep theirs)."""
    return _SEPARATORS.sub("", text)


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def inn_stem(name: str) -> str | None:
    """The INN stem a (Latin) drug name ends with, if any."""
    return next((stem for stem in INN_STEMS if name.endswith(stem)), None)


def is_abbreviation(key: str) -> bool:
    return key.isascii() and len(key) <= ABBREVIATION_MAX_LENGTH


def _strip_generic_ending(text: str) -> str:
    for ending in _GENERIC_ENDINGS:
        if text.endswith(ending) and len(text) > len(ending):
            return text[: -len(ending)]
    return text


# A word whose every word is (nearly) a word of a longer name, "neutrophils" in
# "Neutrophils [#/volume] in Blood", scores this share of how nearly.
WORDS_WEIGHT = 0.9


def _words_found(query: str, choice: str) -> float:
    """How nearly each word of the query is a word of the choice (0-1, mean), or 0 when the
    query has more words than the choice or a word too short to compare."""
    q_words = [w for w in _WORDS.findall(query)]
    c_words = _WORDS.findall(choice)
    if not q_words or len(q_words) > len(c_words) or min(map(len, q_words)) < 4:
        return 0.0
    found = [max(fuzz.ratio(w, c) for c in c_words) / 100 for w in q_words]
    return sum(found) / len(found)


def similarity(query: str, choice: str) -> float:
    """How alike a local word and a name are (0-1), both already folded.

    Token-aware: compared as one string and as sorted tokens, whichever is closer. A name
    wholly inside a longer word counts as that name plus noise (白细胞减少 holds 白细胞; a
    Latin name must be one of the word's words). Chinese names
    sharing a generic ending are compared without it. Latin drug names with different
    INN stems are pulled apart."""
    q, c = compact(query), compact(choice)
    if not q or not c:
        return 0.0
    if q == c:
        return 1.0
    if is_abbreviation(q) or is_abbreviation(c):
        return 0.0
    score = max(fuzz.ratio(q, c), fuzz.token_sort_ratio(query, choice)) / 100
    cjk = has_cjk(q) and has_cjk(c)
    # Chinese is written without spaces, so a name may sit anywhere in the word; a Latin name
    # counts only as a whole word (taxol inside docetaxol is a typo, not paclitaxel).
    inside = (len(c) >= 2 and c in q) if cjk else (len(c) >= 4 and c in query.split())
    if inside:
        score = max(score, 0.85 + 0.15 * len(c) / len(q))
    elif not cjk:
        score = max(score, WORDS_WEIGHT * _words_found(query, choice))
    if cjk:
        q_head, c_head = _strip_generic_ending(q), _strip_generic_ending(c)
        if (q_head, c_head) != (q, c) and q_head != q and c_head != c:
            score = min(score, fuzz.ratio(q_head, c_head) / 100)
    elif q.isascii() and c.isascii():
        q_stem, c_stem = inn_stem(q), inn_stem(c)
        if q_stem and c_stem == q_stem:
            score = min(1.0, score + STEM_BONUS)
        elif q_stem:  # a word without a stem may be a typo inside one: no penalty
            score *= STEM_PENALTY
    return round(min(score, 0.999), 3)


def combination_parts(text: str) -> list[str]:
    """The drug names a combination written with separators names, folded ("培美曲塞+卡铂",
    "paclitaxel / carboplatin"); one part for a word without separators."""
    return [part for part in _COMBINATION.split(strip_dose_and_form(text)) if part]


def segment(text: str, names: Iterable[str]) -> list[str] | None:
    """A Chinese word written without separators cut into known names, longest first
    (培美曲塞卡铂 -> 培美曲塞, 卡铂); None when some part is no known name."""
    known = sorted({n for n in names if len(n) >= 2}, key=len, reverse=True)
    word = compact(text)
    out: list[str] = []
    at = 0
    while at < len(word):
        name = next((n for n in known if word.startswith(n, at)), None)
        if name is None:
            return None
        out.append(name)
        at += len(name)
    return out


def suggestion_margin(scores: Sequence[float]) -> float:
    """The first score's lead over the second, or over the weakest suggestible score when it
    stands alone (a lone weak guess is not a clear winner)."""
    if not scores:
        return 0.0
    runner_up = scores[1] if len(scores) > 1 else weakest_score()
    return round(max(0.0, scores[0] - runner_up), 3)


def weakest_score() -> float:
    """The lowest score a fuzzy suggestion can have."""
    return round(FUZZY_CEILING * MIN_SIMILARITY, 3)


def has_clear_margin(scores: Sequence[float]) -> bool:
    return bool(scores) and suggestion_margin(scores) >= MIN_MARGIN


@dataclass(frozen=True)
class LabelledWord:
    domain: str
    word: str
    expected: str
    kind: str


@dataclass(frozen=True)
class Accuracy:
    """Top-1 and top-3 accuracy on a labelled set; `clear` first suggestions had a clear
    margin (what bulk approval would take), `clear_wrong` of them were wrong."""

    total: int
    top1: float
    top3: float
    clear: int
    clear_wrong: int
    misses: tuple[tuple[LabelledWord, tuple[str, ...]], ...]


def labelled_set_read(path: Path = LABELLED_SET) -> list[LabelledWord]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [LabelledWord(row["domain"], row["local_word"], row["expected_code"], row["kind"])
                for row in csv.DictReader(handle)]


def suggestion_accuracy(rank: Callable[[str, str], tuple[list[str], float]],
                        words: Sequence[LabelledWord]) -> Accuracy:
    """How well `rank(domain, word)` (concept codes best first, and the first one's margin)
    does on a labelled set, with the words whose first suggestion was wrong."""
    top1 = top3 = clear = clear_wrong = 0
    misses = []
    for item in words:
        ranked, margin = rank(item.domain, item.word)
        codes = tuple(ranked[:3])
        right = codes[:1] == (item.expected,)
        top1 += right
        top3 += item.expected in codes
        if codes and margin >= MIN_MARGIN:
            clear += 1
            clear_wrong += not right
        if not right:
            misses.append((item, codes))
    n = len(words) or 1
    return Accuracy(total=len(words), top1=round(top1 / n, 3), top3=round(top3 / n, 3),
                    clear=clear, clear_wrong=clear_wrong, misses=tuple(misses))
