"""The one home for reading YAML safely: every inventory file goes through `load_yaml`.

What it guarantees, whatever the file contains:

- files larger than MAX_BYTES are refused before parsing (stat, then a bounded read);
- the text must be UTF-8 (a UTF-8 byte-order mark is accepted);
- the C parser (libyaml) is used when available: events are read from it and the document is
  built here, iteratively, so deep nesting cannot overflow a stack (nesting deeper than
  MAX_DEPTH is refused);
- aliases (`*name`) and merge keys (`<<`) are refused: nothing is ever expanded, so an "alias
  bomb" costs what its text costs;
- only the plain YAML types are built (null, bool, int, float, str, date/timestamp, mapping,
  sequence); any other tag (`!!python/object`, `!vault`, `!!set`, ...) is an error;
- a key that appears twice in one mapping is an error (YAML would silently keep the last);
- an impossible value (`2024-02-30`) is an error naming its field and line;
- every problem has a line and a dotted field path; values shown in messages are truncated.

Problems are collected, not raised: one file reports all of them at once. `positions` maps every
field path to its line, so later checks (schema, rules) can name lines too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

try:
    from yaml._yaml import CParser as _Parser

    C_LOADER = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)

    C_LOADER = False

MAX_BYTES = 16 * 1024 * 1024  # a Kommune with 100 000 endpoints is ~10 MB
MAX_DEPTH = 64  # the deepest inventory file nests 4 levels
SHOWN = 60  # characters of a value shown in a message
MAX_PROBLEMS = 1000  # per file, from the loader (rules run on what was read)

TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {TAG + t for t in ("null", "bool", "int", "float", "str", "timestamp")}
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_BUILD = {
    TAG + "null": lambda n: None,
    TAG + "bool": _CONSTRUCTOR.construct_yaml_bool,
    TAG + "int": _CONSTRUCTOR.construct_yaml_int,
    TAG + "float": _CONSTRUCTOR.construct_yaml_float,
    TAG + "timestamp": _CONSTRUCTOR.construct_yaml_timestamp,
}


def shown(value: Any) -> str:
    """A value as it may appear in a message: repr, at most SHOWN characters."""
    s = repr(value) if not isinstance(value, str) or len(value) <= SHOWN * 2 else repr(value[: SHOWN * 2])
    return s if len(s) <= SHOWN else s[: SHOWN - 3] + "..."


@dataclass(frozen=True)
class LoadProblem:
    line: int  # 1-based; 0 when the whole file is concerned
    field: str  # dotted path ("endpoints[2].hostname"), "-" for the whole file
    message: str


@dataclass
class Loaded:
    data: Any = None  # None when the file could not be parsed at all
    problems: list[LoadProblem] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)  # field path -> line

    def line_of(self, path: str) -> int:
        """The line of a field, or of its nearest enclosing field that has one (0: unknown)."""
        while path and path != "-":
            if path in self.positions:
                return self.positions[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                break
            path = path[:cut]
        return self.positions.get(path, 0)

    @property
    def bad_fields(self) -> set[str]:
        return {p.field for p in self.problems}


class _Stop(Exception):
    """Parsing cannot go on (syntax error, nesting too deep); the problem is already recorded."""


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(TAG) :] if tag.startswith(TAG) else tag


def _child(path: str, key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]" if path else f"[{key}]"
    return f"{path}.{key}" if path else str(key)


def _syntax_problem(e: yaml.YAMLError, text: str) -> LoadProblem:
    if isinstance(e, yaml.MarkedYAMLError):
        pm, cm = e.problem_mark, e.context_mark
        problem = (e.problem or str(e)).strip()
        # An unclosed quote or bracket is noticed later (often at the end of the file): name the
        # line where it opened, and where the parser gave up.
        context = e.context or ""
        if cm is not None and (pm is None or "end of stream" in problem or "quoted" in context or "flow" in context):
            ctx = context.replace("while scanning ", "").replace("while parsing ", "")
            msg = f"YAML syntax error at line {cm.line + 1}, column {cm.column + 1}: {ctx} not closed ({problem}"
            msg += f" at line {pm.line + 1}, column {pm.column + 1})" if pm is not None else ")"
            return LoadProblem(cm.line + 1, "-", msg)
        if pm is not None:
            return LoadProblem(
                pm.line + 1, "-", f"YAML syntax error at line {pm.line + 1}, column {pm.column + 1}: {problem}"
            )
        return LoadProblem(0, "-", f"YAML syntax error: {problem}")
    if isinstance(e, yaml.reader.ReaderError):
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else 0
        return LoadProblem(
            line, "-", f"unacceptable character #x{e.character:04x} at line {line}; expected printable text"
        )
    return LoadProblem(0, "-", f"YAML error: {str(e)[:200]}")


def _implicit_table() -> dict:
    """Resolver.resolve for plain scalars, precomputed per first character (same order)."""
    table = yaml.resolver.Resolver.yaml_implicit_resolvers
    wildcard = table.get(None, [])
    firsts = {k for k in table if k is not None}
    return {c: table.get(c, []) + wildcard for c in firsts} | {None: wildcard}


_IMPLICIT = _implicit_table()
_STR = TAG + "str"
_INT = TAG + "int"


def _resolve(value: str) -> str:
    for tag, regexp in _IMPLICIT.get(value[0] if value else "", _IMPLICIT[None]):
        if regexp.match(value):
            return tag
    return _STR


class _Reader:
    """The document built from the parser's events, with every problem and field line on the way.

    The event loop (`read`) is the hot path of `basisit inventory validate` (a 10 MB file is
    ~1.2 M events): frames are plain lists [container, path, is_mapping, pending_key, key_line].
    """

    __slots__ = ("docs", "max_depth", "positions", "problems", "root", "stack", "string_tags")

    def __init__(self, out: Loaded, max_depth: int, string_tags: frozenset[str]):
        self.problems, self.positions = out.problems, out.positions
        self.stack: list[list] = []
        self.root: list[Any] = []
        self.docs = 0
        self.max_depth = max_depth
        self.string_tags = string_tags

    def read(self, text: str) -> None:
        """Every event of the text, dispatched by its class; _Stop when reading cannot go on."""
        try:
            parser = _Parser(text)
        except yaml.YAMLError as e:
            self.problems.append(_syntax_problem(e, text))
            raise _Stop from None
        get_event = parser.get_event
        scalar, start, end, alias = self.scalar, self.collection_start, self.collection_end, self.alias
        while True:
            try:
                ev = get_event()
            except yaml.YAMLError as e:
                self.problems.append(_syntax_problem(e, text))
                raise _Stop from None
            cls = type(ev)
            if cls is ScalarEvent:
                scalar(ev)
            elif cls is MappingStartEvent:
                start(ev, True)
            elif cls is SequenceStartEvent:
                start(ev, False)
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                end(ev)
            elif cls is AliasEvent:
                alias(ev)
            elif ev is None or cls is StreamEndEvent:
                return
            elif cls is DocumentStartEvent:
                self.document_start(ev)

    @property
    def data(self) -> Any:
        """The document read (None when there was none or it was refused)."""
        return self.root[0] if self.root and self.root[0] is not _BAD else None

    def problem(self, line: int, path: str, message: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:  # a file of a million aliases must not cost a million messages
            self.problems.append(
                LoadProblem(line, "-", f"more than {MAX_PROBLEMS} problems; stopped reading at line {line}")
            )
            raise _Stop
        self.problems.append(LoadProblem(line, path or "-", message))

    def place(self, value: Any, line: int) -> None:
        """Attach a finished value (or key) to the current container."""
        stack = self.stack
        if not stack:
            self.root.append(value)
            return
        frame = stack[-1]
        container = frame[0]
        if not frame[2]:
            self.positions.setdefault(f"{frame[1]}[{len(container)}]", line)  # a container's: where it starts
            container.append(value)
            return
        key = frame[3]
        if key is _NOKEY:  # this value is a key
            if value is not _BAD:
                child = f"{frame[1]}.{value}" if frame[1] else str(value)
                if value in container:
                    self.problem(
                        line,
                        child,
                        f"duplicate key {shown(value)} at line {line} (first at line {self.positions.get(child, 0)}); "
                        "expected each key once (YAML would silently keep the last value)",
                    )
                else:
                    self.positions[child] = line
            frame[3], frame[4] = value, line
            return
        frame[3] = _NOKEY
        if key is not _BAD:
            container[key] = value

    def path_here(self) -> str:
        """The field path of the next value (for a key: its mapping's path)."""
        if not self.stack:
            return ""
        frame = self.stack[-1]
        if not frame[2]:
            return f"{frame[1]}[{len(frame[0])}]"
        key = frame[3]
        if key is _NOKEY or key is _BAD:
            return frame[1]
        return f"{frame[1]}.{key}" if frame[1] else str(key)

    def _expects_key(self) -> bool:
        """The next value is a key of the current mapping."""
        stack = self.stack
        return bool(stack) and stack[-1][2] and stack[-1][3] is _NOKEY

    def scalar(self, ev: ScalarEvent) -> None:
        """A plain value: strings and decimal ints directly, the other plain types built by PyYAML,
        any other tag (or a merge key) refused."""
        line = ev.start_mark.line + 1
        tag = ev.tag
        value = ev.value
        if tag is None or tag == "!":
            if ev.implicit[0]:
                tag = _resolve(value)
                if tag is _STR:
                    self.place(value, line)
                    return
            else:
                self.place(value, line)  # quoted: a string
                return
        is_key = self._expects_key()
        if tag == _STR or (tag in self.string_tags and not is_key):
            self.place(value, line)  # string_tags: e.g. Ansible's !vault and !unsafe in group_vars
            return
        path = self.path_here()
        if is_key and tag == TAG + "merge":
            self.problem(line, path, f"merge key '<<' at line {line} is not allowed; expected plain keys")
            self.place(_BAD, line)
            return
        if tag == _INT and value.isdecimal() and (value[0] != "0" or value == "0"):
            self.place(int(value), line)  # the common case; YAML 1.1 reads 010 as octal: left to PyYAML
            return
        build = _BUILD.get(tag)
        if build is None:
            self.problem(
                line, path, f"unsupported YAML tag {shown(_tag_name(tag))} at line {line}; expected plain values"
            )
            self.place(_BAD if is_key else None, line)
            return
        try:
            value = build(ScalarNode(tag, value, ev.start_mark, ev.end_mark, ev.style))
        except (ValueError, TypeError, OverflowError, yaml.YAMLError) as e:
            what = tag[len(TAG) :]
            what, hint = ("date", " (no such day)") if what == "timestamp" else (what, "")
            self.problem(line, path, f"{shown(ev.value)} at line {line} is not a valid {what}{hint}: {str(e)[:80]}")
            value = _BAD if is_key else ev.value
        self.place(value, line)

    def collection_start(self, ev: MappingStartEvent | SequenceStartEvent, mapping: bool) -> None:
        """A mapping or list opens: a plain one, not used as a key, not nested deeper than max_depth."""
        line = ev.start_mark.line + 1
        path = self.path_here()
        stack = self.stack
        if ev.tag not in (None, "!", TAG + ("map" if mapping else "seq")):
            self.problem(
                line,
                path,
                f"unsupported YAML tag {shown(_tag_name(ev.tag))} at line {line}; expected a plain "
                f"{'mapping' if mapping else 'list'}",
            )
        if stack and stack[-1][2] and stack[-1][3] is _NOKEY:
            self.problem(
                line, path, f"a {'mapping' if mapping else 'list'} used as a key at line {line}; expected a plain key"
            )
            stack[-1][3] = _BAD_PENDING
        if len(stack) >= self.max_depth:
            self.problem(line, "-", f"nested deeper than {self.max_depth} levels at line {line}; refused")
            raise _Stop
        if stack and not stack[-1][2]:
            self.positions[path] = line
        stack.append([{} if mapping else [], path, mapping, _NOKEY, 0])

    def collection_end(self, ev: MappingEndEvent | SequenceEndEvent) -> None:
        frame = self.stack.pop()
        if self.stack and self.stack[-1][3] is _BAD_PENDING:
            self.stack[-1][3] = _BAD  # the complex key is dropped, and so will its value be
            return
        self.place(frame[0], ev.start_mark.line + 1)

    def alias(self, ev: AliasEvent) -> None:
        line = ev.start_mark.line + 1
        is_key = self._expects_key()
        self.problem(
            line,
            self.path_here(),
            f"YAML alias *{shown(ev.anchor)[1:-1]} at line {line}: aliases are not allowed in the "
            "inventory; expected the value written out",
        )
        self.place(_BAD if is_key else None, line)

    def document_start(self, ev: DocumentStartEvent) -> None:
        self.docs += 1
        if self.docs > 1:
            line = ev.start_mark.line + 1
            self.problem(line, "-", f"a second YAML document at line {line}; expected one")
            raise _Stop


def load_text(text: str, max_depth: int = MAX_DEPTH, string_tags: frozenset[str] = frozenset()) -> Loaded:
    """Parse one YAML document from text; see the module docstring for what is refused."""
    out = Loaded()
    reader = _Reader(out, max_depth, string_tags)
    try:
        reader.read(text)
    except _Stop:
        return out
    except (MemoryError, RecursionError) as e:  # pragma: no cover - defensive
        out.problems.append(LoadProblem(0, "-", f"cannot be parsed ({type(e).__name__})"))
        return out
    out.data = reader.data
    return out


class _BadValue:
    def __repr__(self) -> str:
        return "<invalid>"


_BAD = _BadValue()  # a key or value that was reported and is left out
_NOKEY = _BadValue()  # a mapping waiting for its next key
_BAD_PENDING = _BadValue()  # a complex key being skipped


def load_file(path: Path, max_bytes: int = MAX_BYTES, string_tags: frozenset[str] = frozenset()) -> Loaded:
    """Read and parse a file; unreadable, oversized or non-UTF-8 files are problems, not exceptions."""
    out = Loaded()
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            out.problems.append(
                LoadProblem(
                    0, "-", f"file is {size} bytes, larger than the limit of {max_bytes} bytes; refused before parsing"
                )
            )
            return out
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        out.problems.append(LoadProblem(0, "-", "file is missing; expected it in the inventory directory"))
        return out
    except OSError as e:
        out.problems.append(LoadProblem(0, "-", f"cannot be read ({e.strerror or e}); expected a readable YAML file"))
        return out
    if len(raw) > max_bytes:  # grew between stat and read
        out.problems.append(LoadProblem(0, "-", f"file is larger than the limit of {max_bytes} bytes; refused"))
        return out
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        out.problems.append(
            LoadProblem(line, "-", f"byte 0x{raw[e.start]:02x} at line {line} is not UTF-8; expected a UTF-8 text file")
        )
        return out
    return load_text(text, string_tags=string_tags)
