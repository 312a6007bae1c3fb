"""YAML with line numbers, read safely: safe_load semantics, YAML 1.2 booleans, no aliases, size
limits. Every mapping remembers the line of each of its keys, so errors can point at them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from massive_checks.base.errors import SpecError


class _Map(dict[Any, Any]):
    """A mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


MAX_SPEC_CHARS = 1_000_000  # far above any spec; keeps hostile files from taking the run down
MAX_KEYS = 1000


class _LineLoader(yaml.SafeLoader):
    """safe_load with line numbers; aliases (&a / *a) are refused: a spec never needs them and
    they are how a few lines expand into gigabytes."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError(self.name, event.start_mark.line + 1, "", "YAML aliases (*name) are not allowed in specs")
        return super().compose_node(parent, index)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A value its tag cannot read (`!!int a`, `!!bool`, `!!map [1]`, an integer of 4,301+
        digits) is a SpecError at its line, not Python's own exception."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            if isinstance(exc, SpecError):
                raise
            text = node.value if isinstance(node.value, str) else f"a {node.id}"
            raise SpecError(
                self.name,
                node.start_mark.line + 1,
                "",
                f"{text[:40]!r} cannot be read as {node.tag.rsplit(':', 1)[-1]} ({type(exc).__name__}: {str(exc)[:80]})",
            ) from None


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    mapping = _Map()
    mapping.line, mapping.key_lines = node.start_mark.line + 1, {}
    if len(node.value) > MAX_KEYS:
        raise SpecError(loader.name, node.start_mark.line + 1, "", f"a mapping with {len(node.value)} keys")
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise SpecError(loader.name, key_node.start_mark.line + 1, "", "a key must be a plain name, not a list or mapping")
        if key in mapping:
            raise SpecError(loader.name, key_node.start_mark.line + 1, str(key), "duplicate key")
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off as booleans, which turns
# a configuration named `off` into False.
_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _LineLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )


def _deepest_line(text: str, limit: int = 200) -> int:
    """The line where brackets first nest `limit` deep (where a too-deep file goes wrong)."""
    depth = 0
    for position, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if depth >= limit:
            return text[:position].count("\n") + 1
    return 1


def read_documents(path: str | Path) -> list[Any]:
    """The YAML documents of a file (mappings remember their key lines); None for empty ones.
    Everything that is not safe, UTF-8, bounded YAML is a SpecError naming file and line."""
    path = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(path, None, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(path, line, "", f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})") from None
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(path, None, "", f"the file has {len(text)} characters; a spec file is at most {MAX_SPEC_CHARS}")
    try:
        loader = _LineLoader(text)
        loader.name = path
        documents, lines = [], []
        try:
            while loader.check_node():
                node = loader.get_node()
                lines.append(node.start_mark.line + 1 if node is not None else None)
                documents.append(loader.construct_document(node) if node is not None else None)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        position = getattr(exc, "position", None)  # the reader's errors (control characters) give a character position
        error_line = mark.line + 1 if mark else text[:position].count("\n") + 1 if position is not None else None
        raise SpecError(path, error_line, "", f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise SpecError(path, _deepest_line(text), "", "nested too deeply to be a spec") from None
    for index, (doc, doc_line) in enumerate(zip(documents, lines)):
        if doc is not None and not isinstance(doc, dict):
            raise SpecError(path, doc_line, "", f"document {index + 1} is a {type(doc).__name__}, not a mapping of spec keys")
    return documents
