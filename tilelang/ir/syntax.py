"""Instruction syntax templates: one string per instruction class gives both how the
printer writes it and the parser's grammar for it.

A template is the text of an instruction after `results =` (the results, their types
and the location are the same for every instruction and handled by the printer):

    "load {tensor}[{offsets}]< fill({fill})>"

- literal text is printed as it stands; in the grammar each word and each punctuation
  mark is a token (whitespace is free);
- `{field}` is a slot for a field of the instruction's dataclass; how it is spelled
  follows the field's annotation (`SLOT_KINDS`), or `{field:kind}` names the kind;
- `<...>` is an optional part holding exactly one slot: it is printed when that field
  is present (not None, not False, not empty) and may be left out of the text. A
  `bool` field's slot prints nothing: the part's presence is the value.

`syntax_of(cls)` compiles a class's template once, checking it against the class's
fields, into a `Syntax` that prints an instruction (`Syntax.print`), gives its grammar
alternative (`Syntax.grammar`) and builds an instruction from parsed slot values
(`Syntax.build`).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from functools import cache

from tilelang.ir.core import Instr, Loc, Var
from tilelang.ir.text import print_ints, print_name, print_value, print_values, quote

#: Slot kind of each field annotation a template may use.
SLOT_KINDS: dict[str, str] = {
    "Var": "value",
    "Value": "value",
    "Const | None": "value",
    "tuple[Value, ...]": "values",
    "int": "int",
    "tuple[int, ...]": "ints",
    "str": "name",
    "bool": "flag",
}

#: The grammar symbol that reads each slot kind (see `tilelang.ir.parser.GRAMMAR`).
GRAMMAR_SYMBOLS: dict[str, str | None] = {
    "value": "value",
    "values": "values",
    "int": "SINT",
    "ints": "ints",
    "name": "name",
    "string": "STRING",
    "flag": None,
}

_PIECE = re.compile(r"\{(\w+)(?::(\w+))?\}|<([^<>]*)>|((?:->|[^{}<>])+)")
_TOKEN = re.compile(r"->|[A-Za-z_][A-Za-z0-9_]*|\S")


class SyntaxTemplateError(ValueError):
    """A template that does not fit its class (a bug in an instruction definition)."""


@dataclass(frozen=True)
class Slot:
    field: str
    kind: str


@dataclass(frozen=True)
class Optional:
    parts: tuple[str | Slot, ...]
    slot: Slot


Part = str | Slot | Optional


@dataclass(frozen=True)
class Syntax:
    cls: type[Instr]
    parts: tuple[Part, ...]
    results: str | None  # the field holding the results, if any
    result_count: int | None  # 0, 1, or None for any number

    # -- printing --------------------------------------------------------------------

    def print(self, instr: Instr) -> str:
        return "".join(self._print_part(instr, part) for part in self.parts).rstrip()

    def _print_part(self, instr: Instr, part: Part) -> str:
        if isinstance(part, str):
            return part
        if isinstance(part, Slot):
            return _print_slot(part.kind, getattr(instr, part.field))
        if not _present(getattr(instr, part.slot.field)):
            return ""
        return "".join(self._print_part(instr, inner) for inner in part.parts)

    # -- the grammar -----------------------------------------------------------------

    @property
    def rule(self) -> str:
        """The name of the parse-tree node of this instruction."""
        return "i_" + self.cls.__name__.lower()

    def grammar(self) -> tuple[str, list[str]]:
        """(the alternative of the `op` rule, the extra rules its optional parts need)."""
        items: list[str] = []
        extra: list[str] = []
        for part in self.parts:
            if isinstance(part, Optional):
                name = f"o_{self.cls.__name__.lower()}_{len(extra)}"
                extra.append(f"{name}: {' '.join(_symbols(part.parts))}")
                items.append(f"[{name}]")
            else:
                items.extend(_symbols((part,)))
        return f"{' '.join(items)} -> {self.rule}", extra

    def slots(self) -> tuple[Slot, ...]:
        """The slots in the order the parser hands their values to `build`."""
        found: list[Slot] = []
        for part in self.parts:
            if isinstance(part, Slot):
                found.append(part)
            elif isinstance(part, Optional):
                found.append(part.slot)
        return tuple(found)

    def build(self, values: list, results: tuple[Var, ...], loc: Loc) -> Instr:
        """The instruction from its slots' parsed values (None: an absent optional part)."""
        kwargs: dict[str, object] = {}
        for slot, value in zip(self.slots(), values, strict=True):
            if slot.kind == "flag":
                kwargs[slot.field] = value is not None
            elif value is not None:
                kwargs[slot.field] = value
        if self.results is not None:
            kwargs[self.results] = results if self.result_count is None else results[0]
            if self.optional_result and len(results) < 2:  # `Var | None`: one or none
                kwargs[self.results] = results[0] if results else None
        return self.cls(**kwargs, loc=loc)

    @property
    def optional_result(self) -> bool:
        """The results field is `Var | None` (an instruction whose result may be left
        out, e.g. an atomic's old values): more than one result reaches `check`."""
        annotation = {f.name: f.type for f in fields(self.cls)}.get(self.results)
        return str(annotation) == "Var | None"


def _present(value: object) -> bool:
    return value is not None and value is not False and value != ()


def _print_slot(kind: str, value) -> str:
    if kind == "value":
        return print_value(value)
    if kind == "values":
        return print_values(value)
    if kind == "int":
        return str(int(value))
    if kind == "ints":
        return print_ints(value)
    if kind == "name":
        return print_name(value)
    if kind == "string":
        return quote(value)
    return ""  # a flag: its optional part says it


def _symbols(parts) -> list[str]:
    symbols: list[str] = []
    for part in parts:
        if isinstance(part, str):
            symbols.extend('"' + token.replace('"', r"\"") + '"' for token in _TOKEN.findall(part))
        elif GRAMMAR_SYMBOLS[part.kind] is not None:
            symbols.append(GRAMMAR_SYMBOLS[part.kind])
    return symbols


def words(cls: type[Instr]) -> frozenset[str]:
    """The keywords of a class's template (literal words, e.g. `load`, `fill`, `axis`)."""
    if cls.SYNTAX is None:
        return frozenset()
    literal = re.sub(r"\{[^}]*\}", " ", cls.SYNTAX).replace("<", " ").replace(">", " ")
    return frozenset(w for w in _TOKEN.findall(literal) if w[0].isalpha() or w[0] == "_")


@cache
def syntax_of(cls: type[Instr]) -> Syntax:
    """The compiled template of `cls` (a `SyntaxTemplateError` if it does not fit)."""
    if cls.SYNTAX is None:
        raise SyntaxTemplateError(f"{cls.__name__} has no syntax template")
    annotations = {f.name: f for f in fields(cls)}

    def slot(name: str, kind: str | None) -> Slot:
        if name not in annotations:
            raise SyntaxTemplateError(f"{cls.__name__}.SYNTAX: no field {name!r}")
        kind = kind or SLOT_KINDS.get(str(annotations[name].type))
        if kind not in GRAMMAR_SYMBOLS:
            raise SyntaxTemplateError(
                f"{cls.__name__}.SYNTAX: field {name!r} of type {annotations[name].type} "
                "needs an explicit kind ({field:kind})"
            )
        return Slot(name, kind)

    def compile_parts(text: str, nested: bool) -> tuple[Part, ...]:
        parts: list[Part] = []
        if "".join(m.group() for m in _PIECE.finditer(text)) != text:
            raise SyntaxTemplateError(f"{cls.__name__}.SYNTAX: unbalanced {{}} or <> in {text!r}")
        for match in _PIECE.finditer(text):
            name, kind, optional, literal = match.groups()
            if literal is not None:
                parts.append(literal)
            elif name is not None:
                parts.append(slot(name, kind))
            else:
                if nested:
                    raise SyntaxTemplateError(f"{cls.__name__}.SYNTAX: nested optional parts")
                inner = compile_parts(optional, nested=True)
                slots = [p for p in inner if isinstance(p, Slot)]
                if len(slots) != 1:
                    raise SyntaxTemplateError(
                        f"{cls.__name__}.SYNTAX: an optional part holds exactly one slot"
                    )
                parts.append(Optional(inner, slots[0]))
        return tuple(parts)

    parts = compile_parts(cls.SYNTAX, nested=False)
    named = {s.field for s in Syntax(cls, parts, None, 0).slots()}
    results = cls.RESULTS[0] if cls.RESULTS else None
    for f in annotations.values():
        required = f.default is MISSING and f.default_factory is MISSING
        if required and f.name not in named and f.name != results:
            raise SyntaxTemplateError(f"{cls.__name__}.SYNTAX: the field {f.name!r} is missing")
    count = 0 if results is None else (None if str(annotations[results].type) != "Var" else 1)
    return Syntax(cls, parts, results, count)
