"""filelog operators (the Go stanza names and keys): `json_parser`, `regex_parser`,
`container`, with the `timestamp` and `severity` sub-parsers, applied to one log entry.

An entry is a small mutable record: body, attributes, resource, timestamp, severity. It becomes
an OTLP LogRecord only once, after every operator has run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from otelflow.config.types import ConfigModel

# OTLP severity numbers for the usual level names (the lowest number of each range)
SEVERITY_NUMBERS = {"trace": 1, "debug": 5, "info": 9, "information": 9, "notice": 10,
                    "warn": 13, "warning": 13, "error": 17, "err": 17, "critical": 21,
                    "fatal": 21, "crit": 21, "panic": 21, "emerg": 21, "alert": 21}
_GO_LAYOUT = [("2006", "%Y"), ("01", "%m"), ("02", "%d"), ("15", "%H"), ("04", "%M"),
              ("05", "%S"), (".000000000", ".%f"), (".000000", ".%f"), (".000", ".%f"),
              ("Z07:00", "%z"), ("-0700", "%z"), ("MST", "%Z"), ("Jan", "%b"), ("Mon", "%a")]
_EPOCH = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0, "s.ms": 1e9, "s.us": 1e9, "s.ns": 1e9}
_CRI = re.compile(r"^(?P<time>\S+) (?P<stream>stdout|stderr) (?P<tag>[FP]) ?(?P<log>.*)$")
# A line that ends an entry when partial CRI lines are reassembled: anything but a `P` line
CRI_ENTRY_END = re.compile(r"^(?!\S+ (?:stdout|stderr) P )")
_POD_PATH = re.compile(r"/(?P<namespace>[^/_]+)_(?P<pod>[^/_]+)_(?P<uid>[a-f0-9-]+)/"
                       r"(?P<container>[^/]+)/(?P<restart>\d+)\.log")


@dataclass
class Entry:
    body: Any
    path: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    timestamp_ns: int = 0
    severity_number: int = 0
    severity_text: str = ""


class TimeParser(ConfigModel):
    parse_from: str
    layout_type: Literal["strptime", "gotime", "epoch"] = "strptime"
    layout: str

    def parse(self, entry: Entry) -> None:
        value = get_field(entry, self.parse_from)
        if value is None:
            return
        if self.layout_type == "epoch":
            entry.timestamp_ns = int(float(value) * _EPOCH[self.layout])
            return
        layout = self.layout
        if self.layout_type == "gotime":
            for go, py in _GO_LAYOUT:
                layout = layout.replace(go, py)
        stamp = datetime.strptime(_trim_fraction(str(value)), layout.replace("%L", "%f"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        entry.timestamp_ns = int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000


class SeverityParser(ConfigModel):
    parse_from: str
    mapping: dict[str, str | list[str]] = Field(default_factory=dict)

    def parse(self, entry: Entry) -> None:
        value = get_field(entry, self.parse_from)
        if value is None:
            return
        text = str(value)
        entry.severity_text = text
        for level, aliases in self.mapping.items():
            names = [aliases] if isinstance(aliases, str) else aliases
            if text.lower() in (str(a).lower() for a in names):
                entry.severity_number = SEVERITY_NUMBERS.get(level.lower(), 0)
                return
        entry.severity_number = SEVERITY_NUMBERS.get(text.lower(), 0)


class ParserBase(ConfigModel):
    id: str | None = None
    parse_from: str = "body"
    parse_to: str = "attributes"
    on_error: Literal["send", "drop", "send_quiet", "drop_quiet"] = "send"
    timestamp: TimeParser | None = None
    severity: SeverityParser | None = None

    def apply(self, entry: Entry) -> bool:
        """Parse in place; False when the entry must be dropped (on_error: drop)."""
        try:
            parsed = self.parse_value(get_field(entry, self.parse_from), entry)
            if parsed is not None:
                merge_field(entry, self.parse_to, parsed)
            if self.timestamp:
                self.timestamp.parse(entry)
            if self.severity:
                self.severity.parse(entry)
        except (ValueError, TypeError, KeyError) as exc:
            entry.attributes.setdefault("log.parse_error", f"{self.type}: {exc}")
            return not self.on_error.startswith("drop")
        return True

    def parse_value(self, value: Any, entry: Entry) -> dict | None:
        raise NotImplementedError


class JSONParser(ParserBase):
    type: Literal["json_parser"]

    def parse_value(self, value: Any, entry: Entry) -> dict:
        parsed = json.loads(value)
        if not isinstance(parsed, dict):
            raise ValueError("the JSON value is not an object")
        return parsed


class RegexParser(ParserBase):
    type: Literal["regex_parser"]
    regex: str
    _pattern: re.Pattern = PrivateAttr()

    @model_validator(mode="after")
    def _compile(self) -> RegexParser:
        try:
            self._pattern = re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        if not self._pattern.groupindex:
            raise ValueError("regex must have named groups, e.g. (?P<level>\\w+)")
        return self

    def parse_value(self, value: Any, entry: Entry) -> dict:
        match = self._pattern.match(str(value))
        if match is None:
            raise ValueError("the regex does not match")
        return {k: v for k, v in match.groupdict().items() if v is not None}


class ContainerParser(ParserBase):
    """docker (JSON lines), CRI-O and containerd (CRI text) lines; pod metadata from the path.

    The runtime splits long lines into partial (`P`) lines closed by an `F` line; the filelog
    reader hands them over as one entry (lines joined by newlines, which a CRI line never
    contains) and their log parts are concatenated, as the Go parser's recombine does."""

    type: Literal["container"]
    format: Literal["docker", "crio", "containerd"] | None = None  # None: detect per line
    add_metadata_from_filepath: bool = True
    parse_to: str = "body"

    def parse_value(self, value: Any, entry: Entry) -> None:
        text = str(value)
        if text.startswith("{") and self.format in (None, "docker"):
            record = json.loads(text)
            entry.body = record.get("log", "").rstrip("\n")
            stream, stamp = record.get("stream", ""), record.get("time", "")
        else:
            matches = [_CRI.match(line) for line in text.split("\n")]
            if None in matches:
                raise ValueError("not a docker, CRI-O or containerd log line")
            entry.body = "".join(match.group("log") for match in matches)
            stream, stamp = matches[0].group("stream"), matches[0].group("time")
            if matches[-1].group("tag") == "P":  # flushed before its `F` line arrived
                entry.attributes["logtag"] = "P"
        entry.attributes["log.iostream"] = stream
        if stamp:
            entry.timestamp_ns = parse_rfc3339(stamp)
        if self.add_metadata_from_filepath:
            pod = _POD_PATH.search(entry.path)
            if pod:
                entry.resource.update({
                    "k8s.namespace.name": pod.group("namespace"), "k8s.pod.name": pod.group("pod"),
                    "k8s.pod.uid": pod.group("uid"), "k8s.container.name": pod.group("container"),
                    "k8s.container.restart_count": pod.group("restart")})
        return None


Operator = Annotated[JSONParser | RegexParser | ContainerParser, Field(discriminator="type")]


def parse_rfc3339(text: str) -> int:
    """RFC 3339 with up to nanosecond fractions -> ns since the epoch."""
    main, _, rest = text.partition(".")
    fraction, zone = "", ""
    if rest:
        digits = re.match(r"\d*", rest).group(0)
        fraction, zone = digits, rest[len(digits):]
    else:
        main, zone = (main[:-1], "Z") if main.endswith("Z") else (main[:-6], main[-6:])
    zone = "+00:00" if zone in ("Z", "") else zone
    stamp = datetime.fromisoformat(main + zone)
    return int(stamp.timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])


def _trim_fraction(text: str) -> str:
    """strptime's %f takes at most 6 digits: cut nanosecond fractions."""
    return re.sub(r"(\.\d{6})\d+", r"\1", text)


def get_field(entry: Entry, path: str) -> Any:
    root, _, rest = path.partition(".")
    target = {"body": entry.body, "attributes": entry.attributes, "resource": entry.resource}[root]
    for part in rest.split(".") if rest else ():
        if not isinstance(target, dict):
            return None
        target = target.get(part)
    return target


def merge_field(entry: Entry, path: str, values: dict) -> None:
    root, _, rest = path.partition(".")
    if root == "body" and not rest:
        entry.body = values
        return
    target = {"attributes": entry.attributes, "resource": entry.resource}.get(root)
    if target is None:
        raise ValueError(f"cannot write to {path!r}")
    for part in rest.split(".") if rest else ():
        target = target.setdefault(part, {})
    target.update(values)
