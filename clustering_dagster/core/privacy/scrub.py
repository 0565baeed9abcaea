"""Personal data in short texts replaced by typed placeholders before anything reaches an LLM, an
embedding API or an output: e-mails, phones, payment cards, IBANs, IP addresses, and URLs that carry
credentials or a query string (plain URLs stay).

Own precompiled patterns with validators (Luhn for cards, ISO 13616 mod-97 for IBANs, octet ranges
and `ipaddress` for IPs) and no dependency: Presidio's analyzer needs a spaCy model, and
`phonenumbers` (48 MB installed, ~200 µs a text for one region, so ~5,000 texts/s) needs the region
of every national form, rejects the fictional 555 and Ofcom 07700 900xxx numbers people type when
it validates, and flags dates and codes when it does not. Phones are found by shape instead: `+`
or `00` and 8-15 digits (E.164), North American 3-3-4, and 9-12 digits after a trunk 0 (UK, DE, FR).

The types are replaced in order, most specific first, each on the text the one before left, so a
span is replaced once: URLs (e-mail-like credentials and all), e-mails, IBANs, cards, IPs, phones.
Placeholders hold no digit, '@' or '://', so nothing matches them again, and a text is scrubbed
until a pass changes nothing (a replacement may free a neighbour), so `scrub` is idempotent.

Not caught, on purpose: 7-digit local phones (555-1234), national numbers without a trunk 0
(Spanish 612 345 678), numbers in words or non-ASCII digits, numbers glued to letters
(tel5551234567) or to more digits ("555-123-4567.25"), a plain URL's path, obfuscated e-mails
(john at example dot com) and IP-literal domains, credentials without a URL scheme, MAC addresses,
IBANs spaced other than every 4 characters, cards grouped other than 4-4-4-4(-1..3), 4-6-5, 4-6-4
or not at all, and a Luhn-invalid 13-19 digit number (a mistyped card or a reference: left whole).
Caught though not personal: 4-part version strings (1.2.3.4) as IPs, any Luhn-valid 13-19 digit
number as a card, 10-digit numbers starting 2-9 and 9-12 digit ones starting with one 0 as phones.
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv6Address

import polars as pl

# Type name -> placeholder, in the order the types are replaced (most specific first).
PLACEHOLDERS: dict[str, str] = {
    "url": "[URL]",
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card": "[CARD]",
    "ip": "[IP]",
    "phone": "[PHONE]",
}

# Texts with none of these hold nothing to scrub.
_HINT = re.compile(r"[0-9@]|://|www\.", re.IGNORECASE)
_DIGIT = re.compile(r"[0-9]")
_NON_DIGIT = re.compile(r"[^0-9]+")

# Chinese, Japanese and Korean text runs into addresses without a space: its letters (and their
# full-width forms and punctuation) are never part of one, and boundaries elsewhere are ASCII.
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_URL = re.compile(
    rf"(?:[a-z][a-z0-9+.\-]{{1,15}}://|(?<![a-z0-9.\-])www\.)[^\s<>\"'`{_CJK}]+", re.IGNORECASE
)
_URL_TRAILING = ".,;:!?'\""
_URL_CLOSERS = {")": "(", "]": "[", "}": "{"}
_URL_PATH = re.compile(r"[/?#]")
_URL_HINT = re.compile(r"://|www\.", re.IGNORECASE)

# Word characters but CJK ones (_W), and without '_' (_A) or digits (_L): e-mails in any script.
_W, _A, _L = rf"[^\W{_CJK}]", rf"[^\W_{_CJK}]", rf"[^\W\d_{_CJK}]"
_LABEL = rf"{_A}(?:{_W}|-)*"
_EMAIL = re.compile(rf"(?<!{_W})(?:{_W}|[.%+\-]){{1,64}}@{_LABEL}(?:\.{_LABEL})*\.{_L}{{2,}}")

# Country code, check digits and a BBAN, in groups of 4 with an optional single space between.
_IBAN = re.compile(
    r"(?<![a-z])[a-z]{2}[0-9]{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,3})?(?![a-z0-9])",
    re.IGNORECASE,
)
_IBAN_LETTERS = {ord(c): str(ord(c) - 55) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}

# 4-4-4-4 with 1-3 more (16-19 digits), Amex/Diners 4-6-5 / 4-6-4, or 13-19 digits in one run;
# one separator kind per number.
_CARD = re.compile(
    r"(?<![0-9])(?:"
    r"[0-9]{4}(?P<s>[ \u00a0.\-])[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{4}(?:(?P=s)[0-9]{1,3})?"
    r"|[0-9]{4}(?P<t>[ \u00a0\-])[0-9]{6}(?P=t)[0-9]{4,5}"
    r"|[0-9]{13,19}"
    r")(?![0-9])"
)

_IPV4 = re.compile(
    r"(?<![a-z0-9_.])[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?!\.?[0-9])(?![a-z_])",
    re.IGNORECASE,
)
# 2-7 colons, then a hex group or a dotted IPv4 tail; `ipaddress` decides.
_IPV6 = re.compile(
    r"(?<![a-z0-9_.])(?<![0-9a-f:]:)(?:[0-9a-f]{0,4}:){2,7}"
    r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-f]{1,4})?(?![a-z0-9_:]|\.[0-9])",
    re.IGNORECASE,
)

# A run of digits joined by single separators (space, no-break spaces, . - /) and parentheses,
# maybe after a '+': the candidate phones, judged by `_is_phone`. Not inside a word, a path or a
# query; a '+' may follow a digit or a letter (two numbers, or a word, written together).
_SEP = " \u00a0\u202f.\\-/"
_RUN = re.compile(
    rf"(?:(?<![_@/=#&+])(?:\+|\(\+?)|(?<![A-Za-z0-9_@/=#&+]))[0-9]"
    rf"(?:[0-9]|(?:\)[{_SEP}]?\(?|[{_SEP}]\(?|\()(?=[0-9]))*"
)
# The pieces of a run that a phone may start or end at: split at spaces and slashes.
_RUN_CHUNK = re.compile(r"[^ \u00a0\u202f/]+")
_MAX_PHONE_CHUNKS = 7
_MAX_PASSES = 4
_NANP = re.compile(
    r"(?:1[ \u00a0.\-]?)?(?:\([2-9][0-9]{2}\)[ \u00a0]?|[2-9][0-9]{2}[ \u00a0.\-]?)"
    r"[0-9]{3}[ \u00a0.\-]?[0-9]{4}"
)
_NATIONAL_AREA = re.compile(r"\(0[1-9][0-9]{0,4}\)[ \u00a0]?")
_DATE = re.compile(
    r"(?<![0-9])(?:[0-9]{1,2}([./\-])[0-9]{1,2}\1(?:19|20)[0-9]{2}"
    r"|(?:19|20)[0-9]{2}([./\-])[0-9]{1,2}\2[0-9]{1,2})(?![0-9])"
)
# A 13-19 digit number shaped like a card (checked after Luhn-valid cards are gone): left whole.
_CARD_SHAPE = re.compile(
    r"[0-9]{4}([ \u00a0.\-])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{1,3})?"
    r"|[0-9]{4}([ \u00a0\-])[0-9]{6}\2[0-9]{4,5}|[0-9]{13,19}"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i & 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _iban_valid(compact: str) -> bool:
    """ISO 13616: 15-34 characters, a BBAN with digits, and mod 97 of the rearranged number is 1."""
    if not 15 <= len(compact) <= 34 or sum(c.isdigit() for c in compact[4:]) < 8:
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 == 1


def _iban_length(m: re.Match) -> int:
    """The length of the valid IBAN a candidate starts with, or 0. Its last groups may be a
    following word or number: they are dropped until the rest is valid."""
    text = m.group()
    cut = len(text)
    while cut >= 15:
        if _iban_valid(text[:cut].replace(" ", "").upper()):
            return cut
        cut = text.rfind(" ", 0, cut)
    return 0


def _card_length(m: re.Match) -> int:
    text = m.group()
    if text.isdigit() and len(text) <= 15 and m.string[m.start() - 1 : m.start()] == "+":
        return 0  # +CC and up to 15 digits: an E.164 phone
    digits = _NON_DIGIT.sub("", text)
    if _luhn(digits):
        return len(text)
    if len(digits) > 16 and not text.isdigit() and _luhn(digits[:16]):  # a number after it
        return 19
    return 0


def _ipv4_length(m: re.Match) -> int:
    return len(m.group()) if all(int(octet) <= 255 for octet in m.group().split(".")) else 0


def _ipv6_length(m: re.Match) -> int:
    text = m.group()
    if not _DIGIT.search(text):  # "a::b", "::" and "dead::beef" are more likely words or code
        return 0
    try:
        IPv6Address(text)
    except ValueError:
        return 0
    return len(text)


def _is_phone(text: str) -> bool:
    """Whether a piece of a digit run is a whole phone number."""
    digits = _NON_DIGIT.sub("", text)
    n = len(digits)
    if n < 8:
        return False
    if text.lstrip("(").startswith("+"):
        return n <= 15 and digits[0] != "0"
    if digits.startswith("00"):
        return 10 <= n <= 17 and digits[2] != "0"
    if 10 <= n <= 11 and _NANP.fullmatch(text):
        return True
    if not (9 <= n <= 12 and digits[0] == "0" and digits[1] != "0") or _DATE.search(text):
        return False
    area = _NATIONAL_AREA.match(text)
    rest = text[area.end() :] if area else text
    if "(" in rest or ")" in rest:
        return False
    seps = Counter(" " if c in "\u00a0\u202f" else c for c in rest if not c.isdigit())
    # One separator kind (01 23 45 67 89, 06.12.34.56.78), or spaces with one '/' or '-'
    # (030/123 456 78, 030 12345-67); never '.' beside spaces (amounts, dates with times).
    return len(seps) <= 1 or (len(seps) == 2 and " " in seps and seps["/"] + seps["-"] == 1)


class _Scrubber:
    """One scrubbing job: the replacement callbacks and what they replaced."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def run(self, text: str) -> str:
        # A replacement can free a neighbour that its context hid ("4567:2001:db8::1" is no IPv6
        # address until the phone before it goes): passes until nothing changes.
        for _ in range(_MAX_PASSES):
            if not _HINT.search(text):
                return text
            replaced = self.counts.total()
            text = self._pass(text)
            if self.counts.total() == replaced:
                return text
        return text

    def _pass(self, text: str) -> str:
        if not _URL_HINT.search(text):
            return self._plain(text, phones=True)
        out: list[str] = []
        end = 0
        for m in _URL.finditer(text):
            out.append(self._plain(text[end : m.start()], phones=True))
            out.append(self._url(m.group()))
            end = m.end()
        out.append(self._plain(text[end:], phones=True))
        return "".join(out)

    def _url(self, url: str) -> str:
        tail = len(url)
        while tail:
            last = url[tail - 1]
            opener = _URL_CLOSERS.get(last)
            if last in _URL_TRAILING or (
                opener and url.count(opener, 0, tail) < url.count(last, 0, tail)
            ):
                tail -= 1
            else:
                break
        url, rest = url[:tail], url[tail:]
        after_scheme = url.find("://")
        body = url[after_scheme + 3 :] if after_scheme >= 0 else url
        authority = _URL_PATH.split(body, maxsplit=1)[0]
        query = body.find("?")
        fragment = body.find("#")
        if (
            "@" in authority
            or 0 <= query < len(body) - 1
            or (fragment >= 0 and "=" in body[fragment:])
        ):
            self.counts["url"] += 1
            return PLACEHOLDERS["url"] + rest
        return self._plain(url, phones=False) + rest

    def _plain(self, text: str, phones: bool) -> str:
        if "@" in text:
            text = _EMAIL.sub(self._email, text)
        if not _DIGIT.search(text):
            return text
        text = self._validated(_IBAN, text, "iban", _iban_length)
        text = self._validated(_CARD, text, "card", _card_length)
        if ":" in text:  # first: an IPv6 address may end in an IPv4 one (::ffff:192.0.2.1)
            text = self._validated(_IPV6, text, "ip", _ipv6_length)
        if "." in text:
            text = self._validated(_IPV4, text, "ip", _ipv4_length)
        if phones:
            text = _RUN.sub(self._phones, text)
        return text

    def _email(self, m: re.Match) -> str:
        self.counts["email"] += 1
        return PLACEHOLDERS["email"]

    def _validated(
        self, pattern: re.Pattern, text: str, kind: str, length: Callable[[re.Match], int]
    ) -> str:
        """Candidates of a pattern replaced where `length` finds a valid one at their start. A
        candidate that fails is searched again one character on, since it may have swallowed the
        start of a valid one ("555-123-4567 4111 1111 1111 1111" is first seen as 4567 4111 ...)."""
        out: list[str] = []
        done = pos = 0
        while m := pattern.search(text, pos):
            n = length(m)
            if n:
                out += (text[done : m.start()], PLACEHOLDERS[kind])
                self.counts[kind] += 1
                done = pos = m.start() + n
            else:
                pos = m.start() + 1
        if not out:
            return text
        out.append(text[done:])
        return "".join(out)

    def _phones(self, m: re.Match) -> str:
        run = m.group()
        if len(run) < 8:
            return run
        if run[0] == "(" and ")" not in run:  # "(call 555 ..." or "(+44 7700 900123)"
            inner = _RUN.match(run, 1)
            return "(" + self._phones(inner) if inner else run
        if _is_phone(run):
            self.counts["phone"] += 1
            return PLACEHOLDERS["phone"]
        if _CARD_SHAPE.fullmatch(run):  # a Luhn-invalid card-like number: too long for a phone
            return run
        # Several numbers joined by spaces ("order 12345 555 123 4567", "07700 900123/07700
        # 900456"): the leftmost longest pieces that are phones.
        chunks = [(c.start(), c.end()) for c in _RUN_CHUNK.finditer(run)]
        if len(chunks) < 2:
            return run
        out: list[str] = []
        done = 0
        i = 0
        while i < len(chunks):
            for j in range(min(len(chunks), i + _MAX_PHONE_CHUNKS), i, -1):
                start, end = chunks[i][0], chunks[j - 1][1]
                if run[start] == "(" and ")" not in run[start:end]:  # "3 (555 123 4567"
                    start += 1
                if _is_phone(run[start:end]):
                    out += (run[done:start], PLACEHOLDERS["phone"])
                    self.counts["phone"] += 1
                    done = end
                    i = j
                    break
            else:
                i += 1
        if not out:
            return run
        out.append(run[done:])
        return "".join(out)


def scrub(text: str) -> str:
    """The text with every e-mail, phone, card, IBAN, IP and secret URL as its placeholder."""
    return _Scrubber().run(text)


def scrub_counts(texts: Iterable[str]) -> tuple[list[str], Counter]:
    """The scrubbed texts and how many of each type (a `PLACEHOLDERS` key) were replaced."""
    scrubber = _Scrubber()
    return [scrubber.run(text) for text in texts], scrubber.counts


def scrub_series(series: pl.Series) -> pl.Series:
    """A String series scrubbed, nulls kept, name kept."""
    if series.dtype == pl.Null:
        series = series.cast(pl.String)
    if series.dtype != pl.String:
        raise TypeError(f"scrub_series wants a String series, not {series.dtype}")
    return pl.Series(
        series.name,
        [None if text is None else scrub(text) for text in series.to_list()],
        dtype=pl.String,
    )
