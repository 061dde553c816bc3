"""Hypothesis strategies that damage valid input: byte edits, line edits and arbitrary JSON values.

Mutating real files and real tool output, instead of drawing bytes from
nothing, keeps most examples close enough to the format to reach the deep
parsing steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# Byte edits, each applied at a position that Hypothesis draws and shrinks towards the start.
# "set header" overwrites one of the first HEADER_SIZE bytes, where DER and file formats keep
# their tags, lengths and version fields, which a uniform position would rarely hit.
BYTE_EDITS = ("flip", "set", "set header", "insert", "delete", "truncate", "duplicate")
HEADER_SIZE = 24
LINE_EDITS = ("delete", "duplicate", "swap", "insert", "replace")


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes, max_edits: int = 4) -> bytes:
    """Apply 1 to ``max_edits`` byte edits to ``original``: flips, overwrites, inserts, cuts and copies."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, max_edits))):
        edit = draw(st.sampled_from(BYTE_EDITS)) if data else "insert"
        if edit == "flip":
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
        elif edit == "set":
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
        elif edit == "set header":
            position = draw(st.integers(0, min(len(data), HEADER_SIZE) - 1))
            data[position] = draw(st.integers(0, 255))
        elif edit == "insert":
            position = draw(st.integers(0, len(data)))
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            start = draw(st.integers(0, len(data) - 1))
            del data[start : start + draw(st.integers(1, 32))]
        elif edit == "truncate":
            del data[draw(st.integers(0, len(data) - 1)) :]
        else:
            start = draw(st.integers(0, len(data) - 1))
            chunk = data[start : start + draw(st.integers(1, 64))]
            target = draw(st.integers(0, len(data)))
            data[target:target] = chunk
    return bytes(data)


@st.composite
def mutated_lines(
    draw: st.DrawFn, original: bytes, new_lines: st.SearchStrategy[bytes], max_edits: int = 4
) -> bytes:
    """Apply 1 to ``max_edits`` line edits to ``original``, taking inserted lines from ``new_lines``."""
    lines = original.split(b"\n")
    for _ in range(draw(st.integers(1, max_edits))):
        edit = draw(st.sampled_from(LINE_EDITS))
        position = draw(st.integers(0, len(lines) - 1))
        if edit == "delete" and len(lines) > 1:
            del lines[position]
        elif edit == "duplicate":
            lines.insert(position, lines[position])
        elif edit == "swap" and position + 1 < len(lines):
            lines[position], lines[position + 1] = lines[position + 1], lines[position]
        elif edit == "replace":
            lines[position] = draw(new_lines)
        else:
            lines.insert(position, draw(new_lines))
    return b"\n".join(lines)


def mutated_output(original: bytes, new_lines: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Damage line-oriented tool output by byte edits, line edits, or both."""
    return st.one_of(
        mutated_bytes(original),
        mutated_lines(original, new_lines),
        mutated_lines(original, new_lines).flatmap(mutated_bytes),
    )


@dataclass
class _DerNode:
    """One DER TLV. ``children`` is the parsed content of a constructed value, or of an
    OCTET STRING that encapsulates DER (as X.509 extension values do), and is None otherwise."""

    tag: int
    content: bytes
    children: list[_DerNode] | None


_OCTET_STRING = 0x04
_CONSTRUCTED = 0x20
DER_EDITS = ("content", "integer", "tag", "delete", "duplicate", "truncate")


def _parse_der(data: bytes) -> list[_DerNode] | None:
    """Parse a run of DER values that covers ``data`` exactly, or return None."""
    nodes = []
    position = 0
    while position < len(data):
        tag = data[position]
        if tag & 0x1F == 0x1F or position + 1 >= len(data):
            return None
        length = data[position + 1]
        position += 2
        if length & 0x80:
            size = length & 0x7F
            if size == 0 or size > 4 or position + size > len(data):
                return None
            length = int.from_bytes(data[position : position + size], "big")
            position += size
        content = data[position : position + length]
        if len(content) != length:
            return None
        position += length
        children = None
        if tag & _CONSTRUCTED:
            children = _parse_der(content)
            if children is None:
                return None
        elif tag == _OCTET_STRING and content:
            children = _parse_der(content)
        nodes.append(_DerNode(tag, content, children))
    return nodes


def _encode_der(nodes: list[_DerNode]) -> bytes:
    encoded = bytearray()
    for node in nodes:
        content = _encode_der(node.children) if node.children is not None else node.content
        encoded.append(node.tag)
        if len(content) < 0x80:
            encoded.append(len(content))
        else:
            size = (len(content).bit_length() + 7) // 8
            encoded += bytes([0x80 | size]) + len(content).to_bytes(size, "big")
        encoded += content
    return bytes(encoded)


def _der_positions(nodes: list[_DerNode]) -> list[tuple[list[_DerNode], int]]:
    """List every node of the tree as (the list that contains it, its index), parents before children."""
    positions = []
    for index, node in enumerate(nodes):
        positions.append((nodes, index))
        if node.children is not None:
            positions.extend(_der_positions(node.children))
    return positions


@st.composite
def mutated_der(draw: st.DrawFn, original: bytes, max_edits: int = 3) -> bytes:
    """Edit 1 to ``max_edits`` values inside a DER structure and re-encode it with correct lengths.

    Because every length stays consistent, the damage reaches the parsing of
    single fields (version, names, extensions, public key) instead of stopping
    at the outer structure. Input that is not DER is returned with byte edits.
    """
    tree = _parse_der(original)
    if tree is None:
        return draw(mutated_bytes(original))
    for _ in range(draw(st.integers(1, max_edits))):
        positions = _der_positions(tree)
        if not positions:
            break
        siblings, index = draw(st.sampled_from(positions))
        node = siblings[index]
        edit = draw(st.sampled_from(DER_EDITS))
        if edit == "content":
            node.children = None
            node.content = draw(st.binary(max_size=16))
        elif edit == "integer":
            value = draw(st.integers(-(2**80), 2**80))
            node.children = None
            node.content = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
        elif edit == "tag":
            node.tag = draw(st.integers(0, 255).filter(lambda tag: tag & 0x1F != 0x1F))
        elif edit == "delete":
            del siblings[index]
        elif edit == "duplicate":
            siblings.insert(index, copy.deepcopy(node))
        else:
            content = _encode_der(node.children) if node.children is not None else node.content
            node.children = None
            node.content = content[: draw(st.integers(0, max(len(content) - 1, 0)))]
    return _encode_der(tree)


def damaged_der(original: bytes) -> st.SearchStrategy[bytes]:
    """Damage DER, such as a certificate, by byte edits or by edits of its values."""
    return st.one_of(mutated_bytes(original), mutated_der(original))


def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any JSON value that orjson can encode: scalars, lists and objects nested a few levels."""
    return st.recursive(
        json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=12), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )
