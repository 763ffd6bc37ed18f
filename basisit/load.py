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
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
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


def load_text(text: str, max_depth: int = MAX_DEPTH) -> Loaded:
    """Parse one YAML document from text; see the module docstring for what is refused."""
    out = Loaded()
    problems, positions = out.problems, out.positions
    # stack frames: [container, path, pending_key or _NOKEY, key_line, seen_keys]
    nokey = object()
    stack: list[list] = []
    root: list[Any] = []
    docs = 0

    def add(value: Any, path: str, line: int) -> None:
        """Attach a finished value to the current container."""
        if not stack:
            root.append(value)
            return
        frame = stack[-1]
        container = frame[0]
        if isinstance(container, list):
            container.append(value)
            return
        if frame[2] is nokey:  # this value is a key
            frame[2], frame[3] = value, line
            return
        key, key_line, seen = frame[2], frame[3], frame[4]
        frame[2] = nokey
        if key is _BAD:
            return
        if key in seen:
            problems.append(
                LoadProblem(
                    key_line,
                    path,
                    f"duplicate key {shown(key)} at line {key_line} (first at line {seen[key]}); "
                    "expected each key once (YAML would silently keep the last value)",
                )
            )
        else:
            seen[key] = key_line
        container[key] = value

    def value_path() -> str:
        """The field path of the next value in the current container."""
        if not stack:
            return ""
        frame = stack[-1]
        if isinstance(frame[0], list):
            return _child(frame[1], len(frame[0]))
        if frame[2] is nokey:
            return frame[1]  # a key: reported at the mapping
        return _child(frame[1], frame[2]) if frame[2] is not _BAD else frame[1]

    def is_key() -> bool:
        return bool(stack) and isinstance(stack[-1][0], dict) and stack[-1][2] is nokey

    parser = None
    try:
        try:
            parser = _Parser(text)
        except yaml.YAMLError as e:
            problems.append(_syntax_problem(e, text))
            raise _Stop from None
        while True:
            try:
                ev = parser.get_event()
            except yaml.YAMLError as e:
                problems.append(_syntax_problem(e, text))
                raise _Stop from None
            if ev is None or isinstance(ev, StreamEndEvent):
                break
            if isinstance(ev, (StreamStartEvent, DocumentEndEvent)):
                continue
            if isinstance(ev, DocumentStartEvent):
                docs += 1
                if docs > 1:
                    line = ev.start_mark.line + 1
                    problems.append(LoadProblem(line, "-", f"a second YAML document at line {line}; expected one"))
                    raise _Stop
                continue
            line = ev.start_mark.line + 1
            path = value_path()
            if isinstance(ev, AliasEvent):
                problems.append(
                    LoadProblem(
                        line,
                        path or "-",
                        f"YAML alias *{shown(ev.anchor)[1:-1]} at line {line}: aliases are not allowed in the "
                        "inventory; expected the value written out",
                    )
                )
                add(_BAD if is_key() else None, path, line)
                continue
            if isinstance(ev, ScalarEvent):
                key = is_key()
                tag = ev.tag
                if tag is None or tag == "!":
                    tag = _RESOLVER.resolve(ScalarNode, ev.value, ev.implicit)
                if key and tag == TAG + "merge":
                    problems.append(
                        LoadProblem(
                            line, path or "-", f"merge key '<<' at line {line} is not allowed; expected plain keys"
                        )
                    )
                    add(_BAD, path, line)
                    continue
                if tag not in _SCALAR_TAGS:
                    problems.append(
                        LoadProblem(
                            line,
                            path or "-",
                            f"unsupported YAML tag {shown(_tag_name(tag))} at line {line}; expected plain values",
                        )
                    )
                    add(_BAD if key else None, path, line)
                    continue
                build = _BUILD.get(tag)
                if build is None:
                    value: Any = ev.value
                else:
                    try:
                        value = build(ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style))
                    except (ValueError, TypeError, OverflowError, yaml.YAMLError) as e:
                        what = tag[len(TAG) :]
                        hint = " (no such day)" if what == "timestamp" else ""
                        where = path or "-"
                        problems.append(
                            LoadProblem(
                                line,
                                where,
                                f"{shown(ev.value)} at line {line} is not a valid {'date' if what == 'timestamp' else what}"
                                f"{hint}: {str(e)[:80]}",
                            )
                        )
                        value = _BAD if key else ev.value
                if key:
                    add(value, path, line)
                    continue
                positions.setdefault(path, line)
                add(value, path, line)
                continue
            if isinstance(ev, (MappingStartEvent, SequenceStartEvent)):
                mapping = isinstance(ev, MappingStartEvent)
                want = TAG + ("map" if mapping else "seq")
                if ev.tag not in (None, "!", want):
                    problems.append(
                        LoadProblem(
                            line,
                            path or "-",
                            f"unsupported YAML tag {shown(_tag_name(ev.tag))} at line {line}; expected a plain "
                            f"{'mapping' if mapping else 'list'}",
                        )
                    )
                if is_key():
                    problems.append(
                        LoadProblem(
                            line,
                            path or "-",
                            f"a {'mapping' if mapping else 'list'} used as a key at line {line}; expected a plain key",
                        )
                    )
                    stack[-1][2] = _BAD_PENDING
                if len(stack) >= max_depth:
                    problems.append(
                        LoadProblem(line, "-", f"nested deeper than {max_depth} levels at line {line}; refused")
                    )
                    raise _Stop
                if path:
                    positions.setdefault(path, line)
                stack.append([{} if mapping else [], path, nokey, 0, {}])
                continue
            if isinstance(ev, (MappingEndEvent, SequenceEndEvent)):
                frame = stack.pop()
                container = frame[0]
                if stack and stack[-1][2] is _BAD_PENDING:
                    stack[-1][2] = _BAD  # the complex key is dropped, its value will be too
                    continue
                add(container, frame[1], line)
                continue
    except _Stop:
        return out
    except (MemoryError, RecursionError) as e:  # pragma: no cover - defensive
        problems.append(LoadProblem(0, "-", f"cannot be parsed ({type(e).__name__})"))
        return out
    finally:
        dispose = getattr(parser, "dispose", None) if parser is not None else None
        if dispose:
            dispose()
    out.data = root[0] if root else None
    if out.data is _BAD:
        out.data = None
    return out


class _BadValue:
    def __repr__(self) -> str:
        return "<invalid>"


_BAD = _BadValue()  # a key or value that was reported and is left out
_BAD_PENDING = _BadValue()  # a complex key being skipped


def load_file(path: Path, max_bytes: int = MAX_BYTES) -> Loaded:
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
    return load_text(text)
