"""Support conversations built from the shipped intent datasets, with personal data planted on
purpose, for the conversation datasets and the privacy guarantee (no planted string may reach an
output).

`build_conversations(n, seed)` draws n queries without replacement from Banking77 (train and
test) and HWU64, and wraps each in a multi-turn chat in the OpenAI message format: sometimes a
system turn, often a greeting exchange, the query itself (rarely behind a light prefix such as
"Quick question: "), a generic assistant reply, and follow-ups (thanks, "Also, ...",
clarifications). In about `pii_share` of the conversations it plants fake personal data: e-mail
addresses, phone numbers (US, UK, international), Luhn-valid card numbers, mod-97-valid IBANs
(DE, GB, FR, NL), IPv4 addresses and URLs holding credentials or a token; about a fifth are
appended to the query turn, the rest sit in follow-up user turns. Every planted string is
unique, at least 11 characters long, neither inside another planted string nor holding one, and
listed in `Built.planted` exactly as written, for leak searches.

Each row: `conversation_id`, `user_id` (a Zipf-like pool, so a few users hold many
conversations), `intent` (`b77:<category>` or `hwu:<intent>`, ground truth for evaluation only),
`scenario` (`hwu:<scenario>` for HWU64 rows, else None), `messages`, and, in memory only,
`query` (the dataset text) and `planted` (the strings planted in this conversation).

Writers put one dataset on disk with its YAML beside it (`<stem>.yaml`): `write_messages_jsonl`,
`write_lmsys_parquet`, `write_turns_csv` and `write_turns_parquet`. Same n and seed, same output.

    python -m clustering_dagster_tests.support.conversations --n 1000 --seed 7 \\
        --format messages --out DIR
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
import string
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .paths import REPO

SOURCES = {
    "banking77": (REPO / "data/banking77/train.csv", REPO / "data/banking77/test.csv"),
    "hwu64": (REPO / "data/hwu64/hwu64.csv",),
}
PREFIX = {"banking77": "b77:", "hwu64": "hwu:"}
MIN_PLANTED = 11  # characters: no planted string is short enough to occur by chance
FORMATS = ("messages", "lmsys", "turns", "turns-parquet")


@dataclass
class Built:
    rows: list[dict]
    planted: list[str]  # every planted string, exactly as written in the conversations
    kinds: dict[str, str] = field(default_factory=dict)  # planted string -> its kind


# --- the queries ----------------------------------------------------------------------------


def _queries(sources: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """(text, intent, scenario) for every row of the sources, in file order."""
    out = []
    for source in sources:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
        for path in SOURCES[source]:
            with open(path, newline="", encoding="utf-8") as f:
                for rec in csv.DictReader(f):
                    if source == "banking77":
                        out.append((rec["text"], PREFIX[source] + rec["category"], None))
                    else:
                        out.append(
                            (
                                rec["text"],
                                PREFIX[source] + rec["intent"],
                                PREFIX[source] + rec["scenario"],
                            )
                        )
    return out


# --- planted personal data ------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FIRST = _words(
    "anna james maria david sofia liam olivia noah emma lucas mia ethan chloe omar aisha ravi "
    "priya wei mei kenji yuki hannah jonas lena felix clara pierre camille luca giulia mateo "
    "lucia sven ingrid pieter fleur tomasz kasia diego elena samir fatima grace oscar"
)
_LAST = _words(
    "smith jones taylor brown wilson evans walker wright thompson white martin bernard dubois "
    "moreau muller schmidt schneider fischer weber becker jansen devries bakker visser rossi "
    "ferrari garcia lopez martinez kowalski nowak novak silva santos okafor mensah patel sharma "
    "chen wang tanaka sato kim park nguyen hughes"
)
_MAIL_DOMAINS = _words(
    "gmail.com outlook.com hotmail.co.uk yahoo.com icloud.com proton.me gmx.de web.de orange.fr "
    "ziggo.nl fastmail.com contoso.com fabrikam.com northwind-traders.com example.org"
)
_TAGS = ("bank", "shop", "news", "travel", "support")
_US_AREA = (212, 213, 305, 312, 415, 503, 617, 646, 702, 713, 808, 917)
_CC_FORMATS = (  # country code, digits of the national number, grouping of them
    ("49", (3, 8)),  # +49 30 12345678 (area code drawn below)
    ("33", (1, 2, 2, 2, 2)),  # +33 6 12 34 56 78
    ("31", (1, 8)),  # +31 6 12345678
    ("61", (1, 4, 4)),  # +61 4 1234 5678
    ("91", (5, 5)),  # +91 98765 43210
    ("34", (3, 3, 3)),  # +34 612 345 678
)
_URL_HOSTS = _words(
    "files.acme-corp.net fileshare.contoso.com portal.northwind-traders.com "
    "intranet.fabrikam.com drive.example.net cloud.tailspin-toys.com"
)
_APP_HOSTS = _words(
    "app.example.com accounts.example.org login.contoso.com my.fabrikam.com "
    "secure.northwind-traders.com id.example.net"
)
_PATHS = _words(
    "reports/q3.xlsx shared/statement.pdf export/transactions.csv docs/contract.docx "
    "backup/photos.zip invoices/2024/inv-118.pdf"
)
_WORDS = _words("sunset harbour maple falcon river copper violet orbit pebble summit")


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these sit at odd positions once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    digits = "".join(ch for ch in number if ch.isdigit())
    return len(digits) >= 12 and _luhn_digit(digits[:-1]) == digits[-1]


def _iban_number(iban: str) -> int:
    s = iban.replace(" ", "")
    return int("".join(str(int(ch, 36)) for ch in s[4:] + s[:4]))


def iban_valid(iban: str) -> bool:
    s = iban.replace(" ", "")
    return len(s) >= 15 and s[:2].isalpha() and s[2:4].isdigit() and _iban_number(s) % 97 == 1


def _iban(country: str, bban: str) -> str:
    check = 98 - _iban_number(country + "00" + bban) % 97
    return f"{country}{check:02d}{bban}"


def _digits(rng: random.Random, k: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice(string.digits) for _ in range(k - 1))


def _group(s: str, sizes, sep: str = " ") -> str:
    out, i = [], 0
    for size in sizes:
        out.append(s[i : i + size])
        i += size
    return sep.join(out)


def _email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    year, num = rng.randint(60, 99), rng.randint(1, 999)
    local = rng.choice(
        (
            f"{first}.{last}",
            f"{first}{last}{num}",
            f"{first[0]}{last}{year}",
            f"{first}_{last}{year}",
            f"{last}.{first}",
            f"{first}.{last}+{rng.choice(_TAGS)}",
            f"{first}.{last}{num}",
        )
    )
    return f"{local}@{rng.choice(_MAIL_DOMAINS)}"


def _phone(rng: random.Random) -> str:
    style = rng.choice(("us", "us", "uk", "uk", "intl", "intl"))
    if style == "us":
        area = rng.choice(_US_AREA)
        exch, line = _digits(rng, 3, "23456789"), _digits(rng, 4)
        return rng.choice(
            (
                f"({area}) {exch}-{line}",
                f"{area}-{exch}-{line}",
                f"+1 {area} {exch} {line}",
                f"{area}.{exch}.{line}",
            )
        )
    if style == "uk":
        if rng.random() < 0.6:  # mobile: 07xxx xxxxxx
            prefix, rest = "7" + _digits(rng, 3, "1234589"), _digits(rng, 6)
            return rng.choice(
                (f"0{prefix} {rest}", f"+44 {prefix} {rest}", f"+44 (0){prefix} {rest}")
            )
        if rng.random() < 0.5:  # London: 020 xxxx xxxx
            a, b = _digits(rng, 4, "378"), _digits(rng, 4)
            return rng.choice((f"020 {a} {b}", f"+44 20 {a} {b}"))
        area, a, b = (
            rng.choice(("161", "131", "117", "113")),
            _digits(rng, 3, "23456789"),
            _digits(rng, 4),
        )
        return rng.choice((f"0{area} {a} {b}", f"+44 {area} {a} {b}"))
    cc, sizes = rng.choice(_CC_FORMATS)
    if cc == "49":
        national = rng.choice(("30", "40", "89", "69", "221")) + _digits(rng, 8 - 1, "123456789")
        sizes = (len(national) - 7, 7)
    elif cc in ("33", "31", "61"):
        national = rng.choice("67" if cc == "33" else "6" if cc == "31" else "4") + _digits(
            rng, sum(sizes) - 1
        )
    elif cc == "91":
        national = _digits(rng, 10, "6789")
    else:
        national = _digits(rng, 9, "67")
    return f"+{cc} " + _group(national, sizes)


def _card(rng: random.Random) -> str:
    brand = rng.choice(("visa", "visa", "visa", "mastercard", "mastercard", "amex", "discover"))
    if brand == "visa":
        body = "4" + _digits(rng, 14)
    elif brand == "mastercard":
        prefix = str(rng.choice((51, 52, 53, 54, 55, 2221, 2720)))
        body = prefix + _digits(rng, 15 - len(prefix))
    elif brand == "amex":
        body = rng.choice(("34", "37")) + _digits(rng, 12)
    else:
        body = "6011" + _digits(rng, 11)
    number = body + _luhn_digit(body)
    sizes = (4, 6, 5) if len(number) == 15 else (4, 4, 4, 4)
    return rng.choice(
        (_group(number, sizes), _group(number, sizes), number, _group(number, sizes, "-"))
    )


def _nl_account(rng: random.Random) -> str:
    while True:  # the Dutch eleven test, which pre-IBAN account numbers passed
        acct = _digits(rng, 10, "123456789")
        if sum(int(d) * w for d, w in zip(acct, range(10, 0, -1), strict=True)) % 11 == 0:
            return acct


def _iban_string(rng: random.Random) -> str:
    country = rng.choice(("DE", "GB", "FR", "NL"))
    if country == "DE":
        bban = _digits(rng, 8, "12345678") + _digits(rng, 10)
    elif country == "GB":
        bank = rng.choice(("NWBK", "BARC", "LOYD", "HBUK", "MIDL"))
        bban = bank + _digits(rng, 6) + _digits(rng, 8)
    elif country == "FR":
        bank, branch, acct = (
            rng.choice(("30004", "30003", "20041", "10278")),
            _digits(rng, 5),
            _digits(rng, 11),
        )
        key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(acct)) % 97  # the RIB key
        bban = f"{bank}{branch}{acct}{key:02d}"
    else:
        bank = rng.choice(("ABNA", "INGB", "RABO", "TRIO", "KNAB", "BUNQ"))
        bban = bank + _nl_account(rng)
    iban = _iban(country, bban)
    return (
        _group(iban, [4] * (len(iban) // 4) + [len(iban) % 4]).strip()
        if rng.random() < 0.5
        else iban
    )


def _ipv4(rng: random.Random) -> str:
    while True:
        first = rng.choice((10, 172, 192, 81, 86, 94, 109, 145, 178, 203, 217))
        second = {10: rng.randint(10, 254), 172: rng.randint(16, 31), 192: 168}.get(
            first, rng.randint(10, 254)
        )
        ip = f"{first}.{second}.{rng.randint(10, 254)}.{rng.randint(10, 254)}"
        if len(ip) >= MIN_PLANTED:
            return ip


def _token(rng: random.Random, k: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(k))


def _url(rng: random.Random) -> str:
    style = rng.choice(("creds", "reset", "session", "api"))
    if style == "creds":
        user = rng.choice(_FIRST)[0] + rng.choice(_LAST)
        password = (
            rng.choice(_WORDS).capitalize() + _digits(rng, 2) + rng.choice("!-_.") + _token(rng, 4)
        )
        return f"https://{user}:{password}@{rng.choice(_URL_HOSTS)}/{rng.choice(_PATHS)}"
    host = rng.choice(_APP_HOSTS)
    if style == "reset":
        return f"https://{host}/reset?token={_token(rng, 32, '0123456789abcdef')}"
    if style == "session":
        return f"https://{host}/login?session={_token(rng, 24)}&user={rng.choice(_FIRST)}{rng.randint(10, 99)}"
    # No provider's key prefix (sk_live_, ghp_, ...): secret scanners would block the sample.
    return f"https://{host}/v1/export?format=csv&api_key={_token(rng, 32, string.hexdigits[:16])}"


_MAKERS = {
    "email": _email,
    "phone": _phone,
    "card": _card,
    "iban": _iban_string,
    "ip": _ipv4,
    "url": _url,
}
_KIND_WEIGHTS = {"email": 25, "phone": 20, "card": 15, "iban": 15, "ip": 10, "url": 15}


class _Registry:
    """Planted strings, each unique, none inside another, and unique once spaces and dashes are
    dropped (the same card grouped and ungrouped counts as one)."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.keys: set[str] = set()
        self.text = bytearray(b"\n")

    def make(self, rng: random.Random, kind: str) -> str:
        while True:
            s = _MAKERS[kind](rng)
            key = s.replace(" ", "").replace("-", "").lower()
            if len(s) < MIN_PLANTED or key in self.keys or s.encode() in self.text:
                continue
            if any(
                s[i:j] in self.kinds
                for i in range(len(s))
                for j in range(i + MIN_PLANTED, len(s) + 1)
            ):
                continue
            self.kinds[s] = kind
            self.keys.add(key)
            self.text += s.encode() + b"\n"
            return s


# --- the conversations ----------------------------------------------------------------------

_SYSTEM = {
    "banking77": (
        "You are a helpful customer support assistant for a digital bank.",
        "You are the support assistant of an online bank. Be concise and polite.",
        "You help customers of a mobile banking app with their questions.",
        "You are a friendly support agent. Answer briefly and never ask for a PIN.",
    ),
    "hwu64": (
        "You are a helpful home assistant.",
        "You are a voice assistant for a smart home. Keep answers short.",
        "You are a friendly personal assistant that helps with everyday tasks.",
        "You are a helpful assistant. Answer briefly.",
    ),
}
_GREETINGS = (
    "hi",
    "hello",
    "hello there",
    "hey",
    "hi there",
    "good morning!",
    "good afternoon",
    "hi, I need some help",
    "Hello, can you help me?",
    "hey, are you there?",
    "Hi!",
    "evening",
)
_GREETING_REPLIES = (
    "Hello! How can I help you today?",
    "Hi there, what can I do for you?",
    "Hi! What can I help you with?",
    "Hello, thanks for reaching out. How can I help?",
    "Hey! I'm here to help. What's up?",
    "Hi, I'm here. What would you like to do?",
    "Hello! What can I do for you today?",
)
_HELP_REPLIES = ("Of course, what do you need?", "Sure, what can I help with?")
_QUERY_PREFIXES = ("Quick question: ", "I was wondering, ", "Question: ", "Hey, ", "One thing: ")
_OPENERS = (
    "",
    "",
    "Sure.",
    "Of course.",
    "Thanks for getting in touch.",
    "Happy to help with that.",
    "Got it.",
    "Thanks for the details.",
    "Let me help you with that.",
)
_BODIES = (
    "Let me look into this for you.",
    "I'll check what's going on and get back to you shortly.",
    "Could you tell me a bit more so I can sort this out?",
    "You can do this from the app: open the menu and follow the steps there.",
    "I've passed this on to the right team and they'll follow up.",
    "That should be possible, and I'll walk you through it.",
    "One moment while I check that for you.",
    "Here's what I found; it usually only takes a few minutes.",
    "I can take care of that right away.",
    "This is usually quick to fix, so let's go through it together.",
)
_ALSO = (
    "Also, how long does that usually take?",
    "Also, is there a fee for this?",
    "Also, can I do this from the app?",
    "Also, will I get a confirmation?",
    "Also, can you send me a summary of this chat?",
    "Also, is this available on weekends?",
    "Also, what happens if it doesn't work?",
)
_CLARIFY = (
    "sorry, I meant for my other account",
    "Just to add, this started yesterday.",
    "To be clear, I already tried restarting the app.",
    "it's for my partner actually",
    "I mean this week, not next week",
    "Sorry, to clarify: it happened twice.",
    "no, the other one",
)
_THANKS = ("thanks!", "ok great", "perfect, thank you", "thank you so much", "cool, thanks", "ok")
_FOLLOW_REPLIES = (
    "Thanks for clarifying. I'll take that into account.",
    "Good question. It normally takes a short while, and you'll be notified.",
    "Understood, let me check that as well.",
    "Yes, that's possible. I'll add it to your request.",
    "No problem, I've updated the details.",
)
_CLOSINGS = (
    "You're welcome! Is there anything else I can help with?",
    "Glad I could help. Have a great day!",
    "Anytime! Take care.",
    "You're welcome. Feel free to reach out again.",
    "Happy to help!",
)
_PII_REPLIES = (
    "Thanks, I've got that.",
    "Thank you, I've noted it on your case.",
    "Got it, let me check with that.",
    "Thanks. Please don't share more details than needed here.",
)
_ASKS = {
    "email": "Could you confirm the email address on your account?",
    "phone": "What's the best number to reach you on?",
    "card": "Which card is this about?",
    "iban": "Which account should we send it to?",
    "ip": "Do you know where the login came from?",
    "url": "Could you share the link you received?",
}
_ANSWERS = ("Sure, it's {v}", "it's {v}", "{v}", "yes: {v}")
_PLANTS = {
    "email": (
        "my email is {v}",
        "you can reach me at {v}",
        "It's registered under {v}",
        "my account email is {v}",
        "please send the confirmation to {v}",
        "the email on file should be {v}",
    ),
    "phone": (
        "you can call me on {v}",
        "my number is {v}",
        "call me back at {v} please",
        "the phone number on the account is {v}",
        "text me on {v} if that's easier",
    ),
    "card": (
        "the card ending {last4}, no wait, full number is {v}",
        "card number {v}",
        "it's the card {v}",
        "my card number is {v}",
        "I used {v} for it",
    ),
    "iban": (
        "my IBAN is {v}",
        "please send it to {v}",
        "the transfer went to IBAN {v}",
        "refund to this account: {v}",
    ),
    "ip": (
        "my IP address is {v} if that helps",
        "the login came from {v}, that wasn't me",
        "I'm connecting from {v}",
    ),
    "url": (
        "here's the link I got: {v}",
        "the reset link {v} doesn't work",
        "I shared it via {v}",
        "you can log in with {v} to check",
    ),
}
_FOLLOW_UPS = (0, 1, 2, 3, 4)  # follow-up user turns after the query
_FOLLOW_WEIGHTS = (35, 33, 18, 9, 5)
_SYSTEM_SHARE, _GREETING_SHARE, _PREFIX_SHARE, _CLOSING_SHARE = 0.2, 0.55, 0.06, 0.6
_TWO_ITEMS, _IN_QUERY, _ASK_FIRST = 0.2, 0.24, 0.4


def _plant_phrase(rng: random.Random, kind: str, value: str, answer: bool = False) -> str:
    if answer:
        return rng.choice(_ANSWERS).format(v=value)
    last4 = "".join(ch for ch in value if ch.isdigit())[-4:]
    return rng.choice(_PLANTS[kind]).format(v=value, last4=last4)


def _reply(rng: random.Random) -> str:
    return " ".join(x for x in (rng.choice(_OPENERS), rng.choice(_BODIES)) if x)


def _append(query: str, phrase: str) -> str:
    if query.rstrip()[-1:] in ".?!":
        return f"{query.rstrip()} {phrase[0].upper()}{phrase[1:]}"
    return f"{query}, {phrase}"


def _messages(
    rng: random.Random, source: str, query: str, items: list[tuple[str, str]]
) -> list[dict]:
    def say(role: str, content: str) -> None:
        messages.append({"role": role, "content": content})

    messages: list[dict] = []
    if rng.random() < _SYSTEM_SHARE:
        say("system", rng.choice(_SYSTEM[source]))
    greeting = rng.random() < _GREETING_SHARE
    if greeting:
        hello = rng.choice(_GREETINGS)
        say("user", hello)
        say("assistant", rng.choice(_HELP_REPLIES if "help" in hello else _GREETING_REPLIES))

    in_query = items[:1] if items and rng.random() < _IN_QUERY else []
    later = items[len(in_query) :]
    content = (rng.choice(_QUERY_PREFIXES) if rng.random() < _PREFIX_SHARE else "") + query
    for kind, value in in_query:
        content = _append(content, _plant_phrase(rng, kind, value))
    say("user", content)

    # Follow-up user turns: generic ones, the last maybe a thanks, and the planted ones.
    room = 5 - greeting
    k = rng.choices(_FOLLOW_UPS, _FOLLOW_WEIGHTS)[0]
    plant_turns: list[list[tuple[str, str]]] = []
    if len(later) == 2 and rng.random() < 0.4:
        plant_turns.append(later)
    else:
        plant_turns.extend([item] for item in later)
    k = min(room, max(k, len(plant_turns)))
    kinds = [rng.choice(("also", "clarify")) for _ in range(k - len(plant_turns))]
    final = None
    if kinds and rng.random() < 0.5:
        kinds.pop()
        final = "thanks"
    turns: list = list(kinds)
    for plant in plant_turns:
        turns.insert(rng.randint(0, len(turns)), plant)
    if final:
        turns.append(final)

    for i, turn in enumerate(turns):
        ask = isinstance(turn, list) and len(turn) == 1 and rng.random() < _ASK_FIRST
        if ask:
            say("assistant", rng.choice(_OPENERS[2:]) + " " + _ASKS[turn[0][0]])
        elif i == 0:
            say("assistant", _reply(rng))
        else:
            say(
                "assistant",
                rng.choice(_PII_REPLIES if isinstance(turns[i - 1], list) else _FOLLOW_REPLIES),
            )
        if turn == "also":
            say("user", rng.choice(_ALSO))
        elif turn == "clarify":
            say("user", rng.choice(_CLARIFY))
        elif turn == "thanks":
            say("user", rng.choice(_THANKS))
        else:
            phrases = [_plant_phrase(rng, kind, value, answer=ask) for kind, value in turn]
            say("user", rng.choice((" and ", ". Also ", ", and ")).join(phrases))
    if not turns:
        say("assistant", _reply(rng))
    elif rng.random() < _CLOSING_SHARE:
        last = turns[-1]
        pool = (
            _CLOSINGS
            if last == "thanks"
            else _PII_REPLIES
            if isinstance(last, list)
            else _FOLLOW_REPLIES
        )
        say("assistant", rng.choice(pool))
    return messages


def _users(rng: random.Random, n: int, users: int) -> list[int]:
    """A user index per conversation: each of the first min(n, users) users once, the rest
    drawn Zipf-Mandelbrot (weight 1 / (rank + 3)), the ranks shuffled over the ids."""
    cum = list(itertools.accumulate(1.0 / (rank + 3) for rank in range(1, users + 1)))
    drawn = list(range(min(n, users))) + rng.choices(
        range(users), cum_weights=cum, k=max(0, n - users)
    )
    rank_to_user = list(range(users))
    rng.shuffle(rank_to_user)
    rng.shuffle(drawn)
    return [rank_to_user[r] for r in drawn]


def build_conversations(
    n: int,
    seed: int = 0,
    sources: tuple[str, ...] = ("banking77", "hwu64"),
    pii_share: float = 0.15,
    users: int | None = None,
) -> Built:
    """n conversations, each around a distinct query of the sources; see the module doc."""
    if not sources:
        raise ValueError("sources is empty")
    if not 0.0 <= pii_share <= 1.0:
        raise ValueError(f"pii_share must be within [0, 1], not {pii_share}")
    pool = _queries(tuple(dict.fromkeys(sources)))
    if not 0 <= n <= len(pool):
        raise ValueError(
            f"n={n} conversations asked, but {' + '.join(sources)} hold {len(pool)} queries "
            "(each is used at most once)"
        )
    users = max(1, round(n / 3)) if users is None else users
    if users < 1:
        raise ValueError(f"users must be at least 1, not {users}")

    rng = random.Random(f"conversations:{seed}")
    picked = rng.sample(range(len(pool)), n)
    user_of = _users(rng, n, users)
    with_pii = set(rng.sample(range(n), round(n * pii_share)))
    registry = _Registry()
    kinds, weights = list(_KIND_WEIGHTS), list(_KIND_WEIGHTS.values())
    width_c, width_u = max(6, len(str(n - 1))), max(5, len(str(users - 1)))

    rows, planted = [], []
    for i, p in enumerate(picked):
        text, intent, scenario = pool[p]
        source = "banking77" if intent.startswith(PREFIX["banking77"]) else "hwu64"
        items = []
        if i in with_pii:
            count = 2 if rng.random() < _TWO_ITEMS else 1
            for kind in rng.sample(kinds, count, counts=weights):
                items.append((kind, registry.make(rng, kind)))
                planted.append(items[-1][1])
        rows.append(
            {
                "conversation_id": f"c{i:0{width_c}d}",
                "user_id": f"u{user_of[i]:0{width_u}d}",
                "intent": intent,
                "scenario": scenario,
                "messages": _messages(rng, source, text, items),
                "query": text,
                "planted": [value for _, value in items],
            }
        )
    return Built(rows=rows, planted=planted, kinds={s: registry.kinds[s] for s in planted})


# --- writers --------------------------------------------------------------------------------

_HEADER = (
    "# Conversations written by clustering_dagster_tests/support/conversations.py. The label\n"
    "# column is ground truth, used only to evaluate; every personal detail is fake, planted\n"
    "# to test scrubbing.\n"
)
_MODELS = (
    "vicuna-13b",
    "koala-13b",
    "alpaca-13b",
    "chatglm-6b",
    "oasst-pythia-12b",
    "llama-13b",
    "fastchat-t5-3b",
    "dolly-v2-12b",
)


def _write_yaml(path: Path, fmt: str, **columns: str) -> Path:
    import yaml

    spec = {"kind": "conversations", "format": fmt, **columns}
    out = Path(path).with_suffix(".yaml")
    out.write_text(_HEADER + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return out


def _messages_of(row: dict) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]


def write_messages_jsonl(rows: list[dict], path) -> Path:
    """One JSON object a line: conversation_id, user_id, intent, scenario, messages."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            rec = {k: row[k] for k in ("conversation_id", "user_id", "intent", "scenario")}
            rec["messages"] = _messages_of(row)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    _write_yaml(
        path,
        "messages",
        id_column="conversation_id",
        user_column="user_id",
        label_column="intent",
    )
    return path


def lmsys_frame(rows: list[dict]):
    import polars as pl

    return pl.DataFrame(
        {
            "conversation_id": [r["conversation_id"] for r in rows],
            "model": [
                _MODELS[zlib.crc32(r["conversation_id"].encode()) % len(_MODELS)] for r in rows
            ],
            "conversation": [_messages_of(r) for r in rows],
            "turn": [sum(m["role"] == "user" for m in r["messages"]) for r in rows],
            "language": ["English"] * len(rows),
            "user_id": [r["user_id"] for r in rows],
            "intent": [r["intent"] for r in rows],
            "scenario": [r["scenario"] for r in rows],
        },
        schema={
            "conversation_id": pl.String,
            "model": pl.String,
            "conversation": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
            "turn": pl.Int64,
            "language": pl.String,
            "user_id": pl.String,
            "intent": pl.String,
            "scenario": pl.String,
        },
    )


def write_lmsys_parquet(rows: list[dict], path) -> Path:
    """The LMSYS-Chat-1M layout: conversation_id, model, conversation (list of {role, content}),
    turn (user turns), language, user_id, intent, scenario."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lmsys_frame(rows).write_parquet(path)
    _write_yaml(
        path,
        "lmsys",
        id_column="conversation_id",
        messages_column="conversation",
        user_column="user_id",
        label_column="intent",
    )
    return path


def turns_frame(rows: list[dict], seed: int = 0):
    """One row per turn (conversation_id, turn (0-based), role, content, user_id, intent,
    scenario), shuffled so a reader has to group and order them."""
    import polars as pl

    recs = [
        (r["conversation_id"], t, m["role"], m["content"], r["user_id"], r["intent"], r["scenario"])
        for r in rows
        for t, m in enumerate(r["messages"])
    ]
    random.Random(f"turns:{seed}").shuffle(recs)
    names = ("conversation_id", "turn", "role", "content", "user_id", "intent", "scenario")
    types = (pl.String, pl.Int64, pl.String, pl.String, pl.String, pl.String, pl.String)
    return pl.DataFrame(recs, schema=dict(zip(names, types, strict=True)), orient="row")


def _turns_yaml(path: Path) -> None:
    _write_yaml(
        path,
        "turns",
        conversation_column="conversation_id",
        order_column="turn",
        role_column="role",
        content_column="content",
        user_column="user_id",
        label_column="intent",
    )


def write_turns_csv(rows: list[dict], path, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    turns_frame(rows, seed).write_csv(path)
    _turns_yaml(path)
    return path


def write_turns_parquet(rows: list[dict], path, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    turns_frame(rows, seed).write_parquet(path)
    _turns_yaml(path)
    return path


WRITERS = {
    "messages": (write_messages_jsonl, ".jsonl"),
    "lmsys": (write_lmsys_parquet, ".parquet"),
    "turns": (write_turns_csv, ".csv"),
    "turns-parquet": (write_turns_parquet, ".parquet"),
}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m clustering_dagster_tests.support.conversations",
        description="Write one support-conversation dataset (with planted fake personal data).",
    )
    parser.add_argument("--n", type=int, required=True, help="conversations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=FORMATS, default="messages")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--name", default="support_chats", help="file stem (default support_chats)")
    parser.add_argument(
        "--sources", nargs="+", default=["banking77", "hwu64"], choices=list(SOURCES)
    )
    parser.add_argument("--pii-share", type=float, default=0.15)
    parser.add_argument("--users", type=int, default=None)
    args = parser.parse_args(argv)
    built = build_conversations(
        args.n, args.seed, tuple(args.sources), pii_share=args.pii_share, users=args.users
    )
    writer, suffix = WRITERS[args.format]
    path = writer(built.rows, args.out / f"{args.name}{suffix}")
    print(
        f"{path}: {len(built.rows)} conversations, "
        f"{len({r['user_id'] for r in built.rows})} users, {len(built.planted)} planted strings"
    )
    return path


if __name__ == "__main__":
    main()
