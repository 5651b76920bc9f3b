"""Protobuf text-format parser for Caffe ``.prototxt`` files, schema-free, plus the NetParameter mapping.

Values keep their lexical type: ``5`` -> int, ``0.5`` / ``1e-30`` / ``inf`` / ``1.0f`` -> float,
``"text"`` -> str, ``true`` / ``false`` -> bool, other identifiers (enums such as ``MAX``) -> str.
``parse_prototxt`` then types the parameter messages as caffe.proto declares them (see ``netparam``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from weights_convert.errors import PrototxtSyntaxError, shorten
from weights_convert.netparam import netspec_from_message
from weights_convert.netspec import Message, NetSpec

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+|\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![\w.]))
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<symbol>[{}<>\[\]:,;])
""", re.VERBOSE)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
                   "\\": "\\", "'": "'", '"': '"', "?": "?"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL)
_FLOAT_WORDS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}
_BOOL_WORDS = {"true": True, "True": True, "false": False, "False": False}
_CLOSING = {"{": "}", "<": ">"}
_MAX_DEPTH = 100


class _Token:
    """A lexical token with its 1-based line and column."""

    __slots__ = ("kind", "text", "line", "column")

    def __init__(self, kind: str, text: str, line: int, column: int):
        self.kind, self.text, self.line, self.column = kind, text, line, column

    def describe(self) -> str:
        """The token as shown in error messages."""
        if self.kind == "eof":
            return "end of file"
        if len(self.text) > 60:  # a 10 MB token is not echoed
            return f"{self.text[:40]!r}... ({len(self.text)} characters)"
        return repr(self.text)


def _unescape(body: str, error: PrototxtSyntaxError) -> str:
    """The value of a quoted string's body with C-style escapes resolved."""
    def replace(match: re.Match) -> str:
        esc = match.group(1)
        if esc[0] in "xX":
            return chr(int(esc[1:], 16))
        if esc[0] in "01234567":
            return chr(int(esc, 8))
        if esc[0] in "uU":
            try:
                return chr(int(esc[1:], 16))
            except ValueError:
                raise error from None
        if esc in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[esc]
        raise error
    return _ESCAPE.sub(replace, body)


def tokenize(text: str, source: str | None = None) -> list[_Token]:
    """The tokens of ``text`` (comments and whitespace dropped), ending with an ``eof`` token."""
    tokens = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        column = pos - line_start + 1
        if match is None:
            raise PrototxtSyntaxError(f"unexpected character {text[pos]!r} at line {line}, column {column}",
                                      file=source)
        kind = match.lastgroup
        if kind == "space":
            if match.group() == "\n":
                line, line_start = line + 1, match.end()
        elif kind != "comment":
            tokens.append(_Token(kind, match.group(), line, column))
        pos = match.end()
    tokens.append(_Token("eof", "", line, pos - line_start + 1))
    return tokens


class _Parser:
    """Recursive-descent parser over a token list; nesting tracked with an explicit stack (no recursion)."""

    def __init__(self, tokens: list[_Token], source: str | None):
        self.tokens = tokens
        self.pos = 0
        self.source = source

    def error(self, problem: str, token: _Token | None = None) -> PrototxtSyntaxError:
        """A syntax error located at ``token`` (the current one by default)."""
        token = token or self.tokens[self.pos]
        return PrototxtSyntaxError(f"{problem} at line {token.line}, column {token.column}", file=self.source)

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "eof":
            self.pos += 1
        return token

    def scalar(self) -> Any:
        """One scalar value: a number, (adjacent) strings, a bool or an enum identifier."""
        token = self.take()
        if token.kind == "number":
            try:
                return _number(token.text)
            except ValueError:  # more digits than Python converts (4300)
                raise self.error(f"the number {token.describe()} is too long", token) from None
        if token.kind == "string":
            parts = [token]
            while self.peek().kind == "string":  # "a" "b" is "ab", as in C
                parts.append(self.take())
            return "".join(_unescape(t.text[1:-1], self.error("invalid escape in string", t)) for t in parts)
        if token.kind == "ident":
            word = token.text
            sign = -1.0 if word.startswith("-") else 1.0
            bare = word.lstrip("-")
            if bare.lower() in _FLOAT_WORDS:
                return sign * _FLOAT_WORDS[bare.lower()]
            if word.startswith("-"):
                raise self.error(f"'-' before identifier {bare!r}", token)
            return _BOOL_WORDS.get(word, word)
        raise self.error(f"expected a value, found {token.describe()}", token)

    def parse(self) -> Message:
        """The whole file as one message."""
        root: Message = {}
        stack: list[tuple[Message, str, _Token]] = []  # (enclosing message, closing symbol, opening token)
        current = root
        while True:
            token = self.take()
            if token.kind == "eof":
                if stack:
                    raise self.error(f"missing {stack[-1][1]!r} for the block opened at line {stack[-1][2].line}",
                                     token)
                return root
            if token.kind == "symbol" and stack and token.text == stack[-1][1]:
                current = stack.pop()[0]
                self.skip_separator()
                continue
            if token.kind != "ident" or token.text.startswith("-"):
                raise self.error(f"expected a field name, found {token.describe()}", token)
            name = token.text
            colon = self.peek().kind == "symbol" and self.peek().text == ":"
            if colon:
                self.take()
            nxt = self.peek()
            if nxt.kind == "symbol" and nxt.text in _CLOSING:
                self.take()
                if len(stack) >= _MAX_DEPTH:
                    raise self.error(f"messages nested deeper than {_MAX_DEPTH}", nxt)
                child: Message = {}
                current.setdefault(name, []).append(child)
                stack.append((current, _CLOSING[nxt.text], nxt))
                current = child
                continue
            if not colon:
                raise self.error(f"expected ':' or '{{' after field name {shorten(repr(name), 80)}, found {nxt.describe()}", nxt)
            if nxt.kind == "symbol" and nxt.text == "[":
                self.take()
                current.setdefault(name, []).extend(self.list_values())
            else:
                current.setdefault(name, []).append(self.scalar())
            self.skip_separator()

    def list_values(self) -> list[Any]:
        """The scalars of ``[a, b, c]`` after its opening bracket."""
        values: list[Any] = []
        if self.peek().kind == "symbol" and self.peek().text == "]":
            self.take()
            return values
        while True:
            values.append(self.scalar())
            token = self.take()
            if token.kind == "symbol" and token.text == "]":
                return values
            if not (token.kind == "symbol" and token.text == ","):
                raise self.error(f"expected ',' or ']' in a list, found {token.describe()}", token)

    def skip_separator(self) -> None:
        """Text format allows an optional ',' or ';' after each field."""
        token = self.peek()
        if token.kind == "symbol" and token.text in ",;":
            self.take()


def _number(text: str) -> int | float:
    """A numeric literal: int when it has no point, exponent or f suffix, else float."""
    body = text.lstrip("+-")
    negative = text.startswith("-")
    if body[:2] in ("0x", "0X"):
        value = int(body, 16)
        return -value if negative else value
    if body[-1:] in "fF" and body[:2] not in ("0x", "0X"):
        return float(text[:-1])
    if any(c in body for c in ".eE"):
        return float(text)
    return int(text, 10)


def parse_text_message(text: str, source: str | None = None) -> Message:
    """A protobuf text-format message as a schema-free ``Message``."""
    return _Parser(tokenize(text, source), source).parse()


def parse_prototxt(text: str, source: str | None = None) -> NetSpec:
    """The network defined by a text-format NetParameter (V2 ``layer``, V1 ``layers`` or V0)."""
    return netspec_from_message(parse_text_message(text, source), source, text=True, error=PrototxtSyntaxError)


def read_prototxt(path: str | os.PathLike) -> NetSpec:
    """The network defined by the .prototxt at ``path``."""
    with open(path, "rb") as f:
        raw = f.read()
    source = os.fspath(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PrototxtSyntaxError(f"not UTF-8 text ({err.reason} at byte {err.start})", file=source) from None
    return parse_prototxt(text, source)
