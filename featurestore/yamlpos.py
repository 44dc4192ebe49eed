"""YAML loading that remembers where every key and value stands in the file.

Mappings load as :class:`YMap` (a dict) and sequences as :class:`YList` (a list); both keep
1-based line/column positions so a validator can point at ``file:line:column``.

>>> doc = load_yaml("a: 1\\nb:\\n  - x\\n", "f.yaml")
>>> doc["b"], doc.key_pos("b"), doc["b"].item_pos(0)
(['x'], (2, 1), (3, 5))
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, did_you_mean

Pos = tuple[int, int]


class YMap(dict[Any, Any]):
    """A mapping loaded from YAML, with the position of itself, its keys and its values."""

    pos: Pos = (1, 1)

    def __init__(self) -> None:
        super().__init__()
        self._key_pos: dict[Any, Pos] = {}
        self._value_pos: dict[Any, Pos] = {}
        self.duplicates: list[tuple[Any, Pos]] = []

    def key_pos(self, key: Any) -> Pos:
        """Where `key` is written (the mapping's own position if it is absent)."""
        return self._key_pos.get(key, self.pos)

    def value_pos(self, key: Any) -> Pos:
        """Where the value of `key` starts (the mapping's own position if it is absent)."""
        return self._value_pos.get(key, self.pos)


class YList(list[Any]):
    """A sequence loaded from YAML, with the position of itself and of each item."""

    pos: Pos = (1, 1)

    def __init__(self) -> None:
        super().__init__()
        self._item_pos: list[Pos] = []

    def item_pos(self, index: int) -> Pos:
        """Where item `index` starts."""
        return self._item_pos[index]


def _pos(mark: yaml.Mark) -> Pos:
    return (mark.line + 1, mark.column + 1)


MAX_YAML_BYTES = 1 << 20
"""A definitions or policy file larger than this is refused (1 MiB)."""
MAX_YAML_NODES = 100_000
"""A document that expands (aliases counted each time they are used) to more nodes is refused."""


class _Loader(yaml.SafeLoader):
    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node, self.name)
        return super().construct_document(node)


def _check_expansion(root: yaml.Node, filename: str) -> None:
    """Refuse an alias bomb before anything is built: the expanded size of every node is counted
    once (memoized), so the check is linear in the file, not in the expansion."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a cycle counts once
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                break
        sizes[id(node)] = total
        return total

    if size(root) > MAX_YAML_NODES:
        line, column = _pos(root.start_mark)
        raise YamlSyntaxError(
            Problem(
                f"the document expands to more than {MAX_YAML_NODES:,} values (aliases such as "
                "*name count each time they are used): write it out, or split it",
                filename,
                line,
                column,
            )
        )


def read_yaml_text(path: Path) -> str:
    """A definitions or policy file's text: a regular file, at most MAX_YAML_BYTES, UTF-8;
    anything else raises YamlSyntaxError saying what is wrong with it."""
    fname = str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise YamlSyntaxError(Problem("no such file", fname)) from None
    except OSError as exc:
        raise YamlSyntaxError(Problem(f"cannot read file: {exc.strerror}", fname)) from None
    if stat.S_ISDIR(info.st_mode):
        raise YamlSyntaxError(Problem("is a directory, not a YAML file", fname))
    if not stat.S_ISREG(info.st_mode):
        raise YamlSyntaxError(Problem("is not a regular file (a device or a pipe): give a YAML file", fname))
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise YamlSyntaxError(Problem(f"cannot read file: {exc.strerror}", fname)) from None
    if len(data) > MAX_YAML_BYTES:
        raise YamlSyntaxError(Problem(f"is larger than {MAX_YAML_BYTES:,} bytes: split it into several files", fname))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(
            Problem(f"is not UTF-8 text (byte {exc.start} is not valid): save it as UTF-8", fname)
        ) from None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> YMap:
    result = YMap()
    result.pos = _pos(node.start_mark)
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        if key in result:
            result.duplicates.append((key, _pos(key_node.start_mark)))
        result[key] = value
        result._key_pos[key] = _pos(key_node.start_mark)
        result._value_pos[key] = _pos(value_node.start_mark)
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> YList:
    result = YList()
    result.pos = _pos(node.start_mark)
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result._item_pos.append(_pos(item.start_mark))
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


Report = Callable[[Pos, str], None]
"""Records a problem at a (line, column) position."""


def check_keys(mapping: YMap, allowed: Sequence[str], unknown: Callable[[str], str], report: Report) -> None:
    """Report every key written twice, and every key not in `allowed` with the closest allowed
    one; `unknown(key)` words the start of that message.

    >>> doc = load_yaml("nme: x\\nname: y\\nname: z\\n", "f.yaml")
    >>> check_keys(doc, ["name"], lambda k: f"unknown field '{k}'.", lambda pos, m: print(pos, m))
    (3, 1) 'name' is written twice
    (1, 1) unknown field 'nme'. Did you mean 'name'?
    """
    for key, pos in mapping.duplicates:
        report(pos, f"'{key}' is written twice")
    for key in mapping:
        if key not in allowed:
            report(mapping.key_pos(key), unknown(str(key)) + did_you_mean(str(key), allowed))


class YamlSyntaxError(Exception):
    """The text is not valid YAML; `problem` says where."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def load_yaml(text: str, filename: str) -> Any:
    """Parse one YAML document, keeping positions; raise :class:`YamlSyntaxError` if invalid."""
    loader = _Loader(text)  # a SafeLoader
    loader.name = filename
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = _pos(mark) if mark is not None else (None, None)
        raise YamlSyntaxError(Problem(f"invalid YAML: {exc.problem}", filename, line, column)) from exc
    except yaml.YAMLError as exc:  # e.g. a recursive alias the constructor cannot build
        raise YamlSyntaxError(Problem(f"invalid YAML: {type(exc).__name__}", filename)) from None
    finally:
        loader.dispose()
