"""Title normalization for matching: articles, alternate titles, accents, numbers."""

from __future__ import annotations

import re
import unicodedata

from bst.data.movielens import parse_title

# Articles that ML-1M moves to the end: 'American President, The', 'Haine, La'.
_ARTICLES = (
    "the a an les la le l' il lo gli i un una une des das der die den det el los las "
    "o os as het een de"
).split()
_TRAILING_ARTICLE_RE = re.compile(
    r"^(?P<body>.+?),\s*(?P<article>" + "|".join(re.escape(a) for a in _ARTICLES) + r")\s*$",
    re.IGNORECASE,
)
_TRAILING_PAREN_RE = re.compile(r"^(?P<body>.*?)\s*\((?P<inner>[^()]*)\)\s*$")
_AKA_RE = re.compile(r",?\s*\ba\.?k\.?a\.?\s*", re.IGNORECASE)
_YEAR_SUFFIX_RE = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
# Apostrophe variants, and letters that NFKD does not decompose ('Ri¢hie Ri¢h', 'Ørkenen').
_CHAR_MAP = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "`": "'",
        "\u00b4": "'",
        "¢": "c",
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "Æ": "Ae",
        "œ": "oe",
        "Œ": "Oe",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "þ": "th",
    }
)
_CREDIT_RE = re.compile(r"^(?P<credit>(?:\S+\s+){0,2}\S+?)(?:'s|s')\s+(?P<rest>.+)$")
_FRACTION_RE = re.compile("[\u00bc-\u00be\u2150-\u215e]")
_NON_ALNUM_RE = re.compile(r"[^0-9a-z]+")
_ROMAN = {
    "ii": "2",
    "iii": "3",
    "iv": "4",
    "v": "5",
    "vi": "6",
    "vii": "7",
    "viii": "8",
    "ix": "9",
    "x": "10",
    "xi": "11",
    "xii": "12",
    "xiii": "13",
}
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
_NUMBERS = {
    **_ROMAN,
    **{w: str(i) for i, w in enumerate(_NUMBER_WORDS)},
    **{
        w: str(10 * i)
        for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)
    },
}


def _move_article(name: str) -> str:
    """'American President, The' → 'The American President'; 'Avventura, L'' → "L'Avventura"."""
    match = _TRAILING_ARTICLE_RE.match(name)
    if match is None:
        return name
    article = match.group("article")
    joiner = "" if article.endswith("'") else " "
    return f"{article}{joiner}{match.group('body').strip()}"


def normalize_title(name: str) -> str:
    """The match key of one title: how two spellings of the same title become equal.

    Accents are stripped, case folded, a trailing article moved to the front, ``&``
    read as ``and``, apostrophes dropped (``Schindler's`` → ``schindlers``), other
    punctuation turned into spaces and Roman sequel numbers into digits
    (``Part II`` → ``part 2``). ``'American President, The'`` gives
    ``'the american president'``.
    """
    text = _FRACTION_RE.sub(lambda m: " " + m.group(), name.translate(_CHAR_MAP))  # 33⅓ → 33 ⅓
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _move_article(text.strip()).casefold()
    text = text.replace("&", " and ").replace("'", "")
    tokens = _NON_ALNUM_RE.sub(" ", text).split()
    return " ".join(_NUMBERS.get(t, t) for t in tokens)


def title_names(title: str) -> list[tuple[str, str]]:
    """The names of one ML-1M title (year already removed), as ``(kind, name)`` pairs.

    ``'City of Lost Children, The (Cité des enfants perdus, La)'`` has the title
    ``The City of Lost Children`` and the alternate ``La Cité des enfants perdus``;
    ``'Hard 8 (a.k.a. Sydney, a.k.a. Hard Eight)'`` has the alternates ``Sydney`` and
    ``Hard Eight``; an alternate with a slash (``Alice, Sweet Alice/Holy Terror``) also
    gives each part. Names are readable (articles moved to the front);
    :func:`normalize_title` makes the keys and :func:`partial_names` the weaker variants.
    """
    rest = title.strip()
    alternates: list[str] = []
    while True:
        match = _TRAILING_PAREN_RE.match(rest)
        if match is None or not match.group("body").strip():
            break
        inner = [p.strip() for p in _AKA_RE.split(match.group("inner")) if p.strip()]
        for part in inner[::-1]:
            pieces = [q.strip() for q in part.split("/") if q.strip()]
            alternates[:0] = [part] + (pieces if len(pieces) > 1 else [])
        rest = match.group("body")
    # 'Strike! (a.k.a. ...)' or a leading 'a.k.a.' inside the main title.
    parts = [p.strip() for p in _AKA_RE.split(rest) if p.strip()]
    names = [("title", _move_article(parts[0]))] if parts else []
    names += [("alternate", _move_article(p)) for p in parts[1:] + alternates]
    return names


def partial_names(name: str) -> list[str]:
    """Weaker names inside a title: around a colon or dash, and after a possessive credit.

    ``'Star Wars: Episode IV - A New Hope'`` → ``['Star Wars', 'Episode IV - A New Hope']``;
    ``"Wes Craven's New Nightmare"`` → ``['New Nightmare']``. Catalogs and ML-1M often
    disagree on subtitles and credits, so these are matched too, with a penalty
    (``PARTIAL_PENALTY``) and never in the exact stage.
    """
    out: list[str] = []
    for sep in (":", " - "):
        if sep in name:
            head, tail = name.split(sep, 1)
            out += [head.strip(), tail.strip()]
            break
    match = _CREDIT_RE.match(name)
    if match is not None:
        words = match.group("credit").split()
        rest = match.group("rest").strip()
        # A credit is a name ('Wes Craven's'), not a phrase: 'A Bug's Life' is not 'Life',
        # and a remainder as short as 'List' (of 'Schindler's List') is no evidence.
        if (
            words[0].casefold() not in ("a", "an", "the")
            and all(w[:1].isupper() for w in words)
            and len(_NON_ALNUM_RE.sub("", rest.casefold())) >= 5
        ):
            out.append(rest)
    return [p for p in out if p]


def title_keys(raw_title: str) -> tuple[list[str], int | None]:
    """Distinct normalized keys of a raw ML-1M title such as ``'Seven (Se7en) (1995)'``, and its year.

    Handy for eyeballing what the matcher compares: ``(['seven', 'se7en'], 1995)``.
    """
    title, year = parse_title(raw_title)
    keys: list[str] = []
    for _, name in title_names(title):
        key = normalize_title(name)
        if key and key not in keys:
            keys.append(key)
    return keys, year


def sequel_numbers(key: str) -> str:
    """The digits tokens of a key, in order: sequels differ here ('alien 3' vs 'aliens')."""
    return " ".join(t for t in key.split() if t.isdigit())
