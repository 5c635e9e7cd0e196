"""The expression inside a placeholder, parsed: `{{ object.price * 2 | round(1) }}`.

A deliberately tiny grammar, written by hand rather than borrowed from Jinja: Jinja's engine
reaches attributes of live objects, loops and has unbounded cost; this one reads JSON paths of
the run's context and literals, nothing else.

    expression := term (("+" | "-") term)*
    term       := unary (("*" | "/") unary)*
    unary      := "-" unary | postfix
    postfix    := primary ("|" filter)*
    primary    := path | literal | "(" expression ")"
    filter     := name ["(" [argument ("," argument)*] ")"]
    argument   := literal | "-" number
    literal    := number | "text" | 'text' | true | false | null

As in Jinja, a filter binds tighter than arithmetic (`{{ a + b | abs }}` is `a + abs(b)`; write
`{{ (a + b) | abs }}`). A path is the placeholders' dotted path (`results.0.id`); its keys may
hold "-" (`payload.order-id`), so subtraction needs spaces around its "-" (`object.stock - 5`).
Strings take `\\"`, `\\'` and `\\\\` escapes; a placeholder holds no "{" or "}".

Cost is bounded before anything runs: an expression has at most MAX_EXPRESSION_LENGTH
characters and nests parentheses at most MAX_NESTING deep, so parsing is linear and shallow.
"""

import re
from dataclasses import dataclass

MAX_EXPRESSION_LENGTH = 500
MAX_NESTING = 10

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+(?:\.\d+)?(?![A-Za-z0-9_.]))
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)
    | (?P<symbol>[-+*/|(),])
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")
_ESCAPABLE = {'"', "'", "\\"}
KEYWORDS = {"true": True, "false": False, "null": None}


class ExpressionError(ValueError):
    """An expression that does not parse; the message says where and why."""


@dataclass(frozen=True)
class Node:
    source: str  # the expression's text this node was parsed from, for messages


@dataclass(frozen=True)
class Path(Node):
    path: str


@dataclass(frozen=True)
class Literal(Node):
    value: object


@dataclass(frozen=True)
class Negative(Node):
    operand: Node


@dataclass(frozen=True)
class Arithmetic(Node):
    operator: str  # + - * /
    left: Node
    right: Node


@dataclass(frozen=True)
class Filter(Node):
    operand: Node
    name: str
    arguments: tuple  # literal values


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def parse(text: str) -> Node:
    """The expression `text` (a placeholder's inside, without the braces); ExpressionError when
    it is malformed, too long or nests too deep."""
    text = text.strip()
    if not text:
        raise ExpressionError("An empty placeholder: write a path such as '{{ object.name }}'.")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"A placeholder holds at most {MAX_EXPRESSION_LENGTH} characters; this one has "
            f"{len(text)}."
        )
    return _Parser(text).parse()


def walk(node: Node):
    """`node` and every node below it, operands first."""
    if isinstance(node, Negative):
        yield from walk(node.operand)
    elif isinstance(node, Arithmetic):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Filter):
        yield from walk(node.operand)
    yield node


def _tokens(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            rest = text[position:].lstrip()
            if rest[0] in "\"'":
                raise ExpressionError(f"Unclosed string {rest[:20]} in '{text}'.")
            raise ExpressionError(f"Unexpected '{rest[:20]}' in '{text}'.")
        kind = match.lastgroup
        start = match.start(kind)
        tokens.append(_Token(kind, match.group(kind), start, match.end()))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.index = 0
        self.depth = 0

    def parse(self) -> Node:
        node = self.expression()
        if self.index < len(self.tokens):
            token = self.tokens[self.index]
            raise ExpressionError(f"Unexpected '{token.text}' in '{self.text}'.")
        return node

    # Helpers ---------------------------------------------------------------------------------

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, *symbols: str) -> _Token | None:
        token = self.peek()
        if token is not None and token.kind == "symbol" and token.text in symbols:
            self.index += 1
            return token
        return None

    def expect(self, symbol: str, what: str) -> _Token:
        token = self.take(symbol)
        if token is None:
            found = self.peek()
            where = f"'{found.text}'" if found else "the end"
            raise ExpressionError(f"Expected {what} in '{self.text}', found {where}.")
        return token

    def source(self, start: int) -> str:
        return self.text[start : self.tokens[self.index - 1].end]

    # Grammar ---------------------------------------------------------------------------------

    def expression(self) -> Node:
        start = self.position()
        node = self.term()
        while (token := self.take("+", "-")) is not None:
            right = self.term()
            node = Arithmetic(self.source(start), token.text, node, right)
        return node

    def term(self) -> Node:
        start = self.position()
        node = self.unary()
        while (token := self.take("*", "/")) is not None:
            right = self.unary()
            node = Arithmetic(self.source(start), token.text, node, right)
        return node

    def unary(self) -> Node:
        start = self.position()
        if self.take("-") is not None:
            operand = self.unary()
            return Negative(self.source(start), operand)
        return self.postfix()

    def postfix(self) -> Node:
        start = self.position()
        node = self.primary()
        while self.take("|") is not None:
            name = self.peek()
            if name is None or name.kind != "path" or "." in name.text:
                raise ExpressionError(f"Expected a filter name after '|' in '{self.text}'.")
            self.index += 1
            arguments = self.arguments() if self.take("(") is not None else ()
            node = Filter(self.source(start), node, name.text, arguments)
        return node

    def arguments(self) -> tuple:
        values = []
        if self.take(")") is not None:
            return ()
        while True:
            values.append(self.argument())
            if self.take(")") is not None:
                return tuple(values)
            self.expect(",", "',' or ')' after a filter's argument")

    def argument(self):
        negative = self.take("-") is not None
        token = self.peek()
        if token is None or token.kind not in ("number", "string", "path"):
            raise ExpressionError(
                f'A filter\'s arguments are literals (a number, "text", true, false or null) '
                f"in '{self.text}'."
            )
        if negative and token.kind != "number":
            raise ExpressionError(
                f"'-' before a filter's argument needs a number in '{self.text}'."
            )
        value = self.literal(token)
        return -value if negative else value

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise ExpressionError(f"'{self.text}' ends where a value is expected.")
        start = token.start
        if token.kind == "symbol" and token.text == "(":
            self.index += 1
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ExpressionError(
                    f"Parentheses nest at most {MAX_NESTING} deep in a placeholder."
                )
            node = self.expression()
            self.expect(")", "')'")
            self.depth -= 1
            return _with_source(node, self.source(start))
        if token.kind == "path" and token.text not in KEYWORDS:
            self.index += 1
            return Path(token.text, token.text)
        if token.kind in ("number", "string", "path"):
            return Literal(token.text, self.literal(token))
        raise ExpressionError(f"Unexpected '{token.text}' in '{self.text}': a value is expected.")

    def literal(self, token: _Token):
        self.index += 1
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "string":
            return _unquote(token.text, self.text)
        if token.text in KEYWORDS:
            return KEYWORDS[token.text]
        raise ExpressionError(
            f"A filter's arguments are literals, not paths: '{token.text}' in '{self.text}'."
        )

    def position(self) -> int:
        token = self.peek()
        return token.start if token else len(self.text)


def _with_source(node: Node, source: str) -> Node:
    """A parenthesized node keeps its parentheses in its source (messages quote it)."""
    fields = {name: getattr(node, name) for name in node.__dataclass_fields__}
    fields["source"] = source
    return type(node)(**fields)


def _unquote(token: str, text: str) -> str:
    inner = token[1:-1]
    for match in _ESCAPE.finditer(inner):
        if match.group(1) not in _ESCAPABLE:
            raise ExpressionError(
                f"Unknown escape '\\{match.group(1)}' in {token} in '{text}': "
                "a string escapes only \\\", \\' and \\\\."
            )
    return _ESCAPE.sub(lambda match: match.group(1), inner)
