"""Value patterns for the `redaction` processor: the built-in library and pattern helpers.

Patterns use RE2 syntax, the syntax of the Go collector's regular expressions (no look-around,
no back-references, linear-time matching). A built-in pattern is a regex plus an optional
`refine` step that narrows or rejects each regex match (Luhn for card numbers, mod-97 for
IBANs, digit boundaries), so every check stays a plain function of the text.

`relax()` turns a pattern into a prefilter: it drops the zero-width assertions (`^ $ \\A \\z
\\b \\B`), so the relaxed pattern matches every string the original matches anywhere inside
any surrounding bytes. The processor runs the relaxed alternation over a whole serialized
request once and only walks the items it hits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import re2
from re2 import _re2

_UNANCHORED = _re2.RE2.Anchor.UNANCHORED

Span = tuple[int, int]
Refine = Callable[[str, int, int], list[Span]]


class Regex:
    """An RE2 regex searched through google-re2's core `Match` call.

    The public `re2` wrapper converts offsets and builds match objects on every call (2-3x the
    cost of the match itself on short values); this keeps the per-value cost to one C call.
    Offsets are characters for `str` input and bytes for `bytes` input.
    """

    __slots__ = ("_re", "pattern")

    def __init__(self, pattern: str, longest: bool = False, groups: bool = False):
        options = re2.Options()
        options.longest_match = longest  # leftmost-longest: mask the most
        options.never_capture = not groups  # no submatches: RE2 stays on its fast DFA
        options.log_errors = False
        self._re = _re2.RE2(pattern.encode(), options)
        if not self._re.ok():
            error = self._re.error()
            raise re2.error(error.decode(errors="replace") if isinstance(error, bytes) else error)
        self.pattern = pattern

    def search(self, text: str | bytes) -> bool:
        data = text.encode() if isinstance(text, str) else text
        return self._re.Match(_UNANCHORED, data, 0, len(data))[0][0] >= 0

    def spans(self, text: str | bytes, group: int = 0) -> Iterator[Span]:
        """(start, end) of `group` in each successive non-overlapping match."""
        data = text.encode() if isinstance(text, str) else text
        chars = isinstance(text, str) and len(data) != len(text)
        pos, n = 0, len(data)
        while pos <= n:
            found = self._re.Match(_UNANCHORED, data, pos, n)
            start, end = found[0]
            if start < 0:
                return
            span = found[group]
            if chars and span[0] >= 0:
                span = (len(data[: span[0]].decode()), len(data[: span[1]].decode()))
            yield span
            pos = end if end > start else end + 1

    def all_in(self, data: bytes, label: int, group: int = 0, pos: int = 0,
               endpos: int | None = None) -> list[tuple[int, ...]]:
        """(start, end, `label`, group start, group end) in bytes of each successive
        non-overlapping match in data[pos:endpos] (no empty match at endpos): `spans` for a
        long buffer with many matches."""
        match, out = self._re.Match, []
        append = out.append
        n = len(data) if endpos is None else endpos
        while pos < n:
            found = match(_UNANCHORED, data, pos, n)
            start, end = found[0]
            if start < 0:
                return out
            append((start, end, label, *found[group]))
            pos = end if end > start else end + 1
        return out


class PatternSet:
    """Which of several RE2 patterns match somewhere in a text, in one DFA pass (RE2::Set)."""

    __slots__ = ("_set",)

    def __init__(self, patterns: list[str]):
        options = re2.Options()
        options.never_capture = True
        options.log_errors = False
        self._set = re2.Set.SearchSet(options)
        for pattern in patterns:
            self._set.Add(pattern)
        self._set.Compile()

    def match(self, text: str | bytes) -> list[int]:
        """Indices of the patterns that match `text` (empty when none does)."""
        return self._set.Match(text)


def check_re2(pattern: str) -> str:
    """Return `pattern` if RE2 compiles it, else raise ValueError naming the problem."""
    try:
        Regex(pattern)
    except re2.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


def any_of(patterns: list[str], longest: bool = False) -> Regex | None:
    """One alternation of `patterns` (None for none)."""
    return Regex("|".join(f"(?:{p})" for p in patterns), longest) if patterns else None


def relax(pattern: str) -> str:
    """`pattern` with its zero-width assertions replaced by empty groups (a superset match)."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt == "Q":  # \Q...\E literal text
                end = pattern.find("\\E", i + 2)
                end = n if end < 0 else end + 2
                out.append(pattern[i:end])
                i = end
                continue
            if not in_class and nxt in ("b", "B", "A", "z"):
                out.append("(?:)")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):  # [[:alpha:]]
                end = pattern.find(":]", i + 2)
                end = n if end < 0 else end + 2
                out.append(pattern[i:end])
                i = end
                continue
            in_class = c != "]"
            out.append(c)
        elif c == "[":
            out.append(c)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):  # a leading ] is literal
                out.append("]")
                i += 1
            in_class = True
            continue
        elif c in "^$":
            out.append("(?:)")
        else:
            out.append(c)
        i += 1
    return "".join(out)


# -- refine steps -------------------------------------------------------------------------


_PLAIN = bytes.maketrans(b"0123456789", bytes(range(10)))  # digit -> its value
_DOUBLED = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))  # Luhn-doubled


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of ASCII digits."""
    data = digits.encode()[::-1]
    return (sum(data[0::2].translate(_PLAIN)) + sum(data[1::2].translate(_DOUBLED))) % 10 == 0


_DIGIT_RUN = re.compile("[0-9]+")


def _card_spans(text: str, start: int, end: int) -> list[Span]:
    """Card numbers inside a run of digit groups: 13-19 digits, issuer digit 2-6, Luhn valid.

    Every contiguous sequence of groups is tried, so a card followed by more digits
    (`4111111111111111 1234`) is still found.
    """
    digits = text[start:end].replace(" ", "").replace("-", "")
    if len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
        return [(start, end)]  # the usual case: the run is one card
    if len(digits) <= 13:
        return []
    groups = [m.span() for m in _DIGIT_RUN.finditer(text, start, end)]
    found: list[Span] = []
    g = 0
    while g < len(groups):
        hit = _card_from(text, groups, g)
        if hit is None:
            g += 1
        else:
            found.append((groups[g][0], groups[hit][1]))
            g = hit + 1
    return found


def _card_from(text: str, groups: list[Span], first: int) -> int | None:
    """Index of the last group of the longest valid card starting at group `first`."""
    digits = ""
    best = None
    for last in range(first, len(groups)):
        digits += text[groups[last][0] : groups[last][1]]
        if len(digits) > 19:
            break
        if len(digits) >= 13 and digits[0] in "23456" and luhn_ok(digits):
            best = last
    return best


def _digit_bounded(text: str, start: int, end: int) -> list[Span]:
    """Keep the match only when no digit touches it on either side."""
    if (start and text[start - 1].isdigit()) or (end < len(text) and text[end].isdigit()):
        return []
    return [(start, end)]


def _ipv4_bounded(text: str, start: int, end: int) -> list[Span]:
    """Not inside a longer dotted number or word (`v1.2.3.4`, `1.2.3.4.5`)."""
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if before.isalnum() or before == "." or after.isdigit():
        return []
    return [(start, end)]


def _ipv6_bounded(text: str, start: int, end: int) -> list[Span]:
    """Not glued to letters, digits or colons (`std::vector`), and at least one hex group."""
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if before.isalnum() or before == ":" or after.isalnum() or after == ":":
        return []
    body = text[start:end]
    if body.count(":") < 2 or body.strip(":") == "":
        return []
    return [(start, end)]


def _iban_spans(text: str, start: int, end: int) -> list[Span]:
    """The longest prefix of the match that is a valid IBAN (ISO 13616 mod-97 == 1)."""
    stop = end
    while stop > start:
        compact = text[start:stop].replace(" ", "")
        if 15 <= len(compact) <= 34 and _mod97(compact) == 1:
            return [(start, stop)]
        stop -= 1
    return []


def _mod97(iban: str) -> int:
    moved = iban[4:] + iban[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97
    except ValueError:
        return -1


NATIVE_REFINES: dict[Refine | None, int] = {
    None: 0, _card_spans: 1, _digit_bounded: 2, _ipv4_bounded: 3, _ipv6_bounded: 4,
    _iban_spans: 5,
}
"""The refine steps `otelflow._redact` ports, by its code for them."""


# -- the library ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ValuePattern:
    """A named pattern: mask `group` of every match of `regex` that `refine` keeps."""

    name: str
    regex: str
    description: str
    refine: Refine | None = None
    group: int = 0
    prefilter: str = ""  # a narrower form that still matches wherever `refine` can keep a span

    @property
    def scan(self) -> str:
        """The regex the request-wide prefilter relaxes (the narrower one when given)."""
        return self.prefilter or self.regex

    def spans(self, compiled: Regex, text: str) -> list[Span]:
        """The spans of `text` to mask (the matches of `compiled`, this pattern's regex)."""
        data = text.encode()
        chars = len(data) != len(text)
        out: list[Span] = []
        for _start, _end, _label, start, end in compiled.all_in(data, 0, self.group):
            if start < 0 or end <= start:  # an empty match, or the group took no part
                continue
            if chars:
                start, end = len(data[:start].decode()), len(data[:end].decode())
            if self.refine is None:
                out.append((start, end))
            else:
                out += self.refine(text, start, end)
        return out


_HEX4 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join([
    f"(?:{_HEX4}:){{7}}{_HEX4}",
    f"(?:{_HEX4}:){{1,7}}:",
    f"(?:{_HEX4}:){{1,6}}:{_HEX4}",
    f"(?:{_HEX4}:){{1,5}}(?::{_HEX4}){{1,2}}",
    f"(?:{_HEX4}:){{1,4}}(?::{_HEX4}){{1,3}}",
    f"(?:{_HEX4}:){{1,3}}(?::{_HEX4}){{1,4}}",
    f"(?:{_HEX4}:){{1,2}}(?::{_HEX4}){{1,5}}",
    f"{_HEX4}:(?::{_HEX4}){{1,6}}",
    f":(?::{_HEX4}){{1,7}}",
])
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"

LIBRARY: dict[str, ValuePattern] = {p.name: p for p in [
    ValuePattern("email", r"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}",
                 "e-mail addresses"),
    ValuePattern("credit_card", r"[0-9](?:[ \-]?[0-9]){12,}",
                 "payment card numbers (13-19 digits, Luhn checked)", _card_spans,
                 prefilter=r"[2-6](?:[ \-]?[0-9]){12,}"),  # every kept card starts with 2-6
    ValuePattern("us_ssn", r"[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}",
                 "US social security numbers (123-45-6789)", _digit_bounded),
    ValuePattern("iban", r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?",
                 "international bank account numbers (mod-97 checked)", _iban_spans),
    ValuePattern("ipv4", rf"{_OCTET}(?:\.{_OCTET}){{3}}", "IPv4 addresses", _ipv4_bounded),
    ValuePattern("ipv6", _IPV6, "IPv6 addresses", _ipv6_bounded),
    ValuePattern("jwt", r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*",
                 "JSON web tokens"),
    ValuePattern("bearer_token", r"(?i)bearer[ \t]+([A-Za-z0-9\-._~+/]+=*)",
                 "the token of `Bearer <token>` credentials", group=1),
    ValuePattern("aws_access_key",
                 r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}",
                 "AWS access key ids"),
    ValuePattern("gcp_api_key", r"AIza[0-9A-Za-z_\-]{35}", "Google Cloud API keys"),
    ValuePattern("github_token",
                 r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}",
                 "GitHub tokens"),
    ValuePattern("slack_token", r"xox[abposr]-[A-Za-z0-9\-]{10,}|xapp-[0-9A-Za-z\-]{10,}",
                 "Slack tokens"),
    ValuePattern("private_key_block",
                 r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:[^-]|-[^-])*(?:-----END[A-Z ]*PRIVATE KEY-----)?",
                 "PEM private key blocks (to the END line, or to the end of a cut value)"),
    ValuePattern("phone_e164", r"\+[1-9](?:[ \-.]?[0-9]){6,14}",
                 "phone numbers in E.164 form (+14155552671)", _digit_bounded),
]}

COMMON = ("email", "credit_card", "us_ssn", "jwt", "bearer_token", "aws_access_key",
          "github_token", "private_key_block")
"""The set `value_patterns: [common]` turns on."""

GROUPS = {"common": COMMON, "all": tuple(LIBRARY)}


def expand(names: list[str]) -> list[ValuePattern]:
    """Library patterns for names and group names (`common`, `all`), without duplicates."""
    out: dict[str, ValuePattern] = {}
    for name in names:
        for member in GROUPS.get(name, (name,)):
            out[member] = LIBRARY[member]
    return list(out.values())


# -- URL sanitizer --------------------------------------------------------------------------

_URL_PREFIX = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*)?")
_VERSION = re.compile(r"v[0-9]+(?:\.[0-9]+)*")


def sanitize_url(url: str) -> str:
    """Replace variable path segments (ids, UUIDs, hashes: any segment with a digit, except
    version tags like `v2`) with `*` and drop the query and fragment, keeping scheme and host."""
    if not url:
        return url
    head = _URL_PREFIX.match(url).group()  # type: ignore[union-attr]
    path = url[len(head):].split("?", 1)[0].split("#", 1)[0]
    segments = [_segment(s) for s in path.split("/")]
    return head + "/".join(segments)


def _segment(segment: str) -> str:
    if any(c.isdigit() for c in segment) and not _VERSION.fullmatch(segment):
        return "*"
    return segment
