"""A small GraphQL engine for the fake GitHub: parse, validate, execute — no I/O.

Supports what clients send to GitHub's ``POST /graphql``: queries and mutations with
variables (and defaults), aliases, arguments with every literal kind, named fragments,
inline fragments with type conditions (``... on PullRequest``), ``@include``/``@skip``
and ``__typename``. Validation reports unknown fields/arguments, selection mismatches
and undeclared or missing variables the way GitHub does (HTTP 200, an ``errors`` array,
no ``data``); resolver failures become ``errors`` entries with a ``type`` and the field
``path`` while the field itself becomes ``null``.

The schema is plain data: ``{type name: {field name: FieldDef}}`` plus interfaces and
a ``type_of`` callback for runtime types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FieldDef", "FieldError", "Schema", "execute", "parse", "GraphQLSyntaxError"]


class GraphQLSyntaxError(Exception):
    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


class FieldError(Exception):
    """Raised by resolvers: becomes an ``errors`` item (``type`` e.g. NOT_FOUND)."""

    def __init__(self, message: str, type_: str = "UNPROCESSABLE") -> None:
        super().__init__(message)
        self.message, self.type = message, type_


class _ValidationError(Exception):
    def __init__(self, item: dict[str, Any]) -> None:
        super().__init__(item["message"])
        self.item = item


# --- syntax tree --------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Enum:
    name: str


@dataclass
class Field:
    alias: str
    name: str
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any] | None
    line: int
    column: int


@dataclass
class InlineFragment:
    type_condition: str | None
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any]


@dataclass
class FragmentSpread:
    name: str
    directives: list[tuple[str, dict[str, Any]]]
    line: int
    column: int


@dataclass
class Operation:
    kind: str
    name: str | None
    variables: dict[str, tuple[str, Any, bool]]  # name -> (type, default, has_default)
    selections: list[Any]
    line: int
    column: int


@dataclass
class Document:
    operations: list[Operation] = field(default_factory=list)
    fragments: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)


# --- lexer / parser ------------------------------------------------------------------

_TOKEN = re.compile(
    r'(?P<ws>[\s,\ufeff]+|#[^\n]*)'
    r'|(?P<block>"""(?:\\"""|[^"]|"(?!""))*""")'
    r'|(?P<string>"(?:\\.|[^"\\\n])*")'
    r'|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
    r'|(?P<name>[_A-Za-z][_0-9A-Za-z]*)'
    r'|(?P<spread>\.\.\.)'
    r'|(?P<punct>[!$&()\:=@\[\]{}|])'
)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _tokens(source: str) -> list[tuple[str, str, int, int]]:
    out: list[tuple[str, str, int, int]] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if not m:
            raise GraphQLSyntaxError(f"Parse error on {source[pos]!r}", line, pos - line_start + 1)
        kind = m.lastgroup or ""
        text = m.group(0)
        if kind != "ws":
            out.append((kind, text, line, pos - line_start + 1))
        newlines = text.count("\n")
        if newlines:
            line += newlines
            line_start = pos + text.rfind("\n") + 1
        pos = m.end()
    out.append(("eof", "", line, pos - line_start + 1))
    return out


def _unquote(kind: str, text: str) -> str:
    if kind == "block":
        return text[3:-3].replace('\\"""', '"""')
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt == "u":
                out.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class _Parser:
    def __init__(self, source: str) -> None:
        self.toks = _tokens(source)
        self.i = 0

    def peek(self, text: str | None = None, kind: str | None = None) -> bool:
        k, t, _, _ = self.toks[self.i]
        return (text is None or t == text) and (kind is None or k == kind)

    def take(self, text: str | None = None, kind: str | None = None) -> tuple[str, str, int, int]:
        tok = self.toks[self.i]
        if not self.peek(text, kind):
            shown = tok[1] or "end of file"
            raise GraphQLSyntaxError(f'Parse error on "{shown}" ({tok[0].upper()}) at [{tok[2]}, {tok[3]}]',
                                     tok[2], tok[3])
        self.i += 1
        return tok

    def document(self) -> Document:
        doc = Document()
        while not self.peek(kind="eof"):
            if self.peek("{"):
                _, _, line, col = self.toks[self.i]
                doc.operations.append(Operation("query", None, {}, self.selection_set(), line, col))
            elif self.peek("fragment"):
                self.take()
                name = self.take(kind="name")[1]
                self.take("on")
                cond = self.take(kind="name")[1]
                self.directives()
                doc.fragments[name] = (cond, self.selection_set())
            else:
                _, kind, line, col = self.take(kind="name")
                if kind not in ("query", "mutation", "subscription"):
                    raise GraphQLSyntaxError(f'Parse error on "{kind}" (IDENTIFIER) at [{line}, {col}]', line, col)
                name = self.take(kind="name")[1] if self.peek(kind="name") else None
                variables = self.variable_defs() if self.peek("(") else {}
                self.directives()
                doc.operations.append(Operation(kind, name, variables, self.selection_set(), line, col))
        return doc

    def variable_defs(self) -> dict[str, tuple[str, Any, bool]]:
        out: dict[str, tuple[str, Any, bool]] = {}
        self.take("(")
        while not self.peek(")"):
            self.take("$")
            name = self.take(kind="name")[1]
            self.take(":")
            type_ = self.type_ref()
            if self.peek("="):
                self.take()
                out[name] = (type_, self.value(const=True), True)
            else:
                out[name] = (type_, None, False)
            self.directives()
        self.take(")")
        return out

    def type_ref(self) -> str:
        if self.peek("["):
            self.take()
            inner = self.type_ref()
            self.take("]")
            text = f"[{inner}]"
        else:
            text = self.take(kind="name")[1]
        if self.peek("!"):
            self.take()
            text += "!"
        return text

    def directives(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while self.peek("@"):
            self.take()
            name = self.take(kind="name")[1]
            out.append((name, self.arguments() if self.peek("(") else {}))
        return out

    def arguments(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.take("(")
        while not self.peek(")"):
            name = self.take(kind="name")[1]
            self.take(":")
            out[name] = self.value()
        self.take(")")
        return out

    def value(self, const: bool = False) -> Any:
        kind, text, line, col = self.toks[self.i]
        if text == "$" and not const:
            self.take()
            return Var(self.take(kind="name")[1])
        if kind == "number":
            self.take()
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind in ("string", "block"):
            self.take()
            return _unquote(kind, text)
        if kind == "name":
            self.take()
            if text in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[text]
            return Enum(text)
        if text == "[":
            self.take()
            items = []
            while not self.peek("]"):
                items.append(self.value(const))
            self.take("]")
            return items
        if text == "{":
            self.take()
            obj: dict[str, Any] = {}
            while not self.peek("}"):
                key = self.take(kind="name")[1]
                self.take(":")
                obj[key] = self.value(const)
            self.take("}")
            return obj
        raise GraphQLSyntaxError(f'Parse error on "{text or "end of file"}" ({kind.upper()}) at [{line}, {col}]',
                                 line, col)

    def selection_set(self) -> list[Any]:
        self.take("{")
        out: list[Any] = []
        while not self.peek("}"):
            if self.peek(kind="spread"):
                _, _, line, col = self.take()
                if self.peek("on") or self.peek("{") or self.peek("@"):
                    cond = None
                    if self.peek("on"):
                        self.take()
                        cond = self.take(kind="name")[1]
                    directives = self.directives()
                    out.append(InlineFragment(cond, directives, self.selection_set()))
                else:
                    name = self.take(kind="name")[1]
                    out.append(FragmentSpread(name, self.directives(), line, col))
                continue
            _, name, line, col = self.take(kind="name")
            alias = name
            if self.peek(":"):
                self.take()
                name = self.take(kind="name")[1]
            args = self.arguments() if self.peek("(") else {}
            directives = self.directives()
            selections = self.selection_set() if self.peek("{") else None
            out.append(Field(alias, name, args, directives, selections, line, col))
        self.take("}")
        if not out:
            raise GraphQLSyntaxError("Parse error: empty selection set", *self.toks[self.i - 1][2:])
        return out


def parse(source: str) -> Document:
    """Parse a GraphQL document (raises :class:`GraphQLSyntaxError`)."""
    return _Parser(source).document()


# --- schema and execution ---------------------------------------------------------------


@dataclass(frozen=True)
class FieldDef:
    """A field: its GraphQL type (``String!``, ``[PullRequest]``…), resolver and arguments.

    ``resolve(obj, args, context)``; without one the value is ``obj[name]`` for dicts or
    ``getattr(obj, name)`` otherwise.
    """

    type: str
    resolve: Callable[[Any, dict[str, Any], Any], Any] | None = None
    args: tuple[str, ...] = ()


@dataclass
class Schema:
    types: dict[str, dict[str, FieldDef]]
    interfaces: dict[str, set[str]]  # interface name -> implementing object types
    type_of: Callable[[Any], str]
    scalars: frozenset[str] = frozenset(
        {"String", "Int", "Float", "Boolean", "ID", "DateTime", "URI", "GitObjectID", "HTML", "GitSSHRemote"}
    )
    enums: frozenset[str] = frozenset()


def _base(type_: str) -> tuple[str, bool]:
    """(named type, is_list) of a type reference."""
    t = type_.rstrip("!")
    if t.startswith("["):
        return t[1:-1].rstrip("!"), True
    return t, False


def _loc(node: Field | FragmentSpread) -> list[dict[str, int]]:
    return [{"line": node.line, "column": node.column}]


class _Executor:
    def __init__(self, schema: Schema, doc: Document, op: Operation, variables: Mapping[str, Any], ctx: Any) -> None:
        self.schema, self.doc, self.op, self.ctx = schema, doc, op, ctx
        self.errors: list[dict[str, Any]] = []
        self.variables: dict[str, Any] = {}
        self.op_label = f"{op.kind} {op.name}" if op.name else op.kind
        for name, (type_, default, has_default) in op.variables.items():
            if name in variables and variables[name] is not None:
                self.variables[name] = variables[name]
            elif has_default:
                self.variables[name] = default
            elif type_.endswith("!"):
                raise _ValidationError({
                    "extensions": {"value": None, "problems": [{"path": [], "explanation": "Expected value to not be null"}]},
                    "locations": [{"line": op.line, "column": op.column}],
                    "message": f"Variable ${name} of type {type_} was provided invalid value",
                })
            else:
                self.variables[name] = None

    # validation ----------------------------------------------------------------------

    def validate(self, selections: list[Any], type_name: str, path: list[str]) -> None:
        for sel in selections:
            if isinstance(sel, FragmentSpread):
                if sel.name not in self.doc.fragments:
                    raise _ValidationError({"locations": _loc(sel), "path": path,
                                            "extensions": {"code": "undefinedFragment", "fragmentName": sel.name},
                                            "message": f"Fragment {sel.name} was used, but not defined"})
                cond, subsel = self.doc.fragments[sel.name]
                self.validate(subsel, cond, path)
                continue
            if isinstance(sel, InlineFragment):
                self.validate(sel.selections, sel.type_condition or type_name, path)
                continue
            self._check_vars(sel.args, sel, path)
            if sel.name == "__typename":
                continue
            fields = self.schema.types.get(type_name, {})
            fdef = fields.get(sel.name)
            here = path + [sel.alias]
            if fdef is None:
                raise _ValidationError({
                    "path": here, "extensions": {"code": "undefinedField", "typeName": type_name, "fieldName": sel.name},
                    "locations": _loc(sel), "message": f"Field '{sel.name}' doesn't exist on type '{type_name}'"})
            for arg in sel.args:
                if arg not in fdef.args:
                    raise _ValidationError({
                        "path": here + [arg],
                        "extensions": {"code": "argumentNotAccepted", "name": sel.name, "typeName": "Field",
                                       "argumentName": arg},
                        "locations": _loc(sel), "message": f"Field '{sel.name}' doesn't accept argument '{arg}'"})
            named, _ = _base(fdef.type)
            leaf = named in self.schema.scalars or named in self.schema.enums
            if leaf and sel.selections:
                raise _ValidationError({
                    "path": here, "extensions": {"code": "selectionMismatch", "nodeName": f"field '{sel.name}'",
                                                 "typeName": named},
                    "locations": _loc(sel),
                    "message": f"Selections can't be made on scalars (field '{sel.name}' returns {named} "
                               f"but has selections [{', '.join(s.name for s in sel.selections if isinstance(s, Field))}])"})
            if not leaf and not sel.selections:
                raise _ValidationError({
                    "path": here, "extensions": {"code": "selectionMismatch", "nodeName": f"field '{sel.name}'",
                                                 "typeName": named},
                    "locations": _loc(sel),
                    "message": f"Field must have selections (field '{sel.name}' returns {named} but has no selections. "
                               f"Did you mean '{sel.name} {{ ... }}'?)"})
            if sel.selections:
                self.validate(sel.selections, named, here)

    def _check_vars(self, value: Any, node: Field, path: list[str]) -> None:
        if isinstance(value, Var):
            if value.name not in self.op.variables:
                raise _ValidationError({
                    "path": path, "extensions": {"code": "variableNotDefined", "variableName": value.name},
                    "locations": _loc(node),
                    "message": f"Variable ${value.name} is used by {self.op_label} but not declared"})
        elif isinstance(value, dict):
            for v in value.values():
                self._check_vars(v, node, path)
        elif isinstance(value, list):
            for v in value:
                self._check_vars(v, node, path)

    # execution -------------------------------------------------------------------------

    def value(self, v: Any) -> Any:
        if isinstance(v, Var):
            return self.variables.get(v.name)
        if isinstance(v, Enum):
            return v.name
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        return v

    def included(self, directives: list[tuple[str, dict[str, Any]]]) -> bool:
        for name, args in directives:
            cond = bool(self.value(args.get("if")))
            if (name == "include" and not cond) or (name == "skip" and cond):
                return False
        return True

    def matches(self, cond: str | None, runtime: str) -> bool:
        return cond is None or cond == runtime or runtime in self.schema.interfaces.get(cond, set())

    def collect(self, selections: list[Any], runtime: str, out: list[Field]) -> list[Field]:
        for sel in selections:
            if isinstance(sel, Field):
                if self.included(sel.directives):
                    out.append(sel)
            elif isinstance(sel, InlineFragment):
                if self.included(sel.directives) and self.matches(sel.type_condition, runtime):
                    self.collect(sel.selections, runtime, out)
            elif self.included(sel.directives):
                cond, subsel = self.doc.fragments[sel.name]
                if self.matches(cond, runtime):
                    self.collect(subsel, runtime, out)
        return out

    def object(self, obj: Any, type_name: str, selections: list[Any], path: list[Any]) -> dict[str, Any]:
        runtime = self.schema.type_of(obj) if type_name in self.schema.interfaces else type_name
        result: dict[str, Any] = {}
        for sel in self.collect(selections, runtime, []):
            if sel.name == "__typename":
                result[sel.alias] = runtime
                continue
            fdef = self.schema.types[runtime].get(sel.name) if runtime in self.schema.types else None
            if fdef is None:
                fdef = self.schema.types[type_name][sel.name]
            here = path + [sel.alias]
            try:
                args = {k: self.value(v) for k, v in sel.args.items()}
                if fdef.resolve is not None:
                    raw = fdef.resolve(obj, args, self.ctx)
                elif isinstance(obj, Mapping):
                    raw = obj.get(sel.name)
                else:
                    raw = getattr(obj, sel.name, None)
            except FieldError as exc:
                self.errors.append({"type": exc.type, "path": here, "locations": _loc(sel), "message": exc.message})
                result[sel.alias] = None
                continue
            result[sel.alias] = self.complete(raw, fdef.type, sel, here)
        return result

    def complete(self, raw: Any, type_: str, sel: Field, path: list[Any]) -> Any:
        if raw is None:
            return None
        named, is_list = _base(type_)
        if is_list:
            return [self.complete(item, named, sel, path + [i]) for i, item in enumerate(raw)]
        if named in self.schema.scalars or named in self.schema.enums:
            return raw
        assert sel.selections is not None
        return self.object(raw, named, sel.selections, path)


def execute(
    schema: Schema,
    source: str,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
    context: Any = None,
    root_value: Any = None,
) -> dict[str, Any]:
    """Run one request; returns the response envelope (``data`` and/or ``errors``)."""
    try:
        doc = parse(source)
    except GraphQLSyntaxError as exc:
        return {"errors": [{"message": exc.message, "locations": [{"line": exc.line, "column": exc.column}]}]}
    ops = [op for op in doc.operations if operation_name is None or op.name == operation_name]
    if not ops:
        msg = (f'No operation named "{operation_name}"' if operation_name else "No operations in query document")
        return {"errors": [{"message": msg}]}
    if len(ops) > 1:
        return {"errors": [{"message": "An operation name is required"}]}
    op = ops[0]
    root_type = {"query": "Query", "mutation": "Mutation"}.get(op.kind)
    if root_type is None or root_type not in schema.types:
        return {"errors": [{"message": f"Schema is not configured for {op.kind}s",
                            "locations": [{"line": op.line, "column": op.column}]}]}
    try:
        ex = _Executor(schema, doc, op, variables or {}, context)
        ex.validate(op.selections, root_type, [ex.op_label])
    except _ValidationError as exc:
        return {"errors": [exc.item]}
    data = ex.object(root_value, root_type, op.selections, [])
    envelope: dict[str, Any] = {"data": data}
    if ex.errors:
        envelope["errors"] = ex.errors
    return envelope
