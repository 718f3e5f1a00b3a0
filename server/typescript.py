"""TypeScript types for @trpc/client, generated from the procedure registry: ``python -m server typescript``.

The output is one ``.d.ts`` declaring ``AppRouter`` in the ``TRPCBuiltRouter`` form that ``createTRPCClient<AppRouter>``
accepts (@trpc/server's exported aliases), with a type per wire Struct taken from msgspec's JSON schema of the
registry's input and output types — the same schema the server validates with, so the names (camelCase), the
optional fields and the nullable ones are exactly what travels on the wire:

- an input field with a default may be left out (``field?: T``), and an input whose fields all have defaults may be
  left out whole (``input: T | undefined``, so ``.query()`` type-checks); an output field is always present, because the
  server encodes every field (unless a Struct sets ``omit_defaults``, whose defaulted fields become optional);
- ``Money``, ``UUID``, ``datetime`` and the other string formats are ``string``; ``Literal`` is a union of
  literals; a tagged union is a TypeScript discriminated union (each variant carries its tag field);
- a Struct used by both inputs and outputs whose two forms differ is declared twice: ``Name`` (as received) and
  ``NameInput`` (as sent);
- a subscription yields ``Tracked<Event>`` (``{id, data}``, as @trpc/client hands out a ``tracked()`` event) when it
  is resumable, else the event itself.

The types are type aliases, not interfaces: @trpc/client maps every output through its ``Serialize`` type, which
leaves a JSON-compatible type alias untouched (an interface has no implicit index signature, so it would be rebuilt
into an anonymous type and lose its name in editors and error messages).
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from schemas import codec
from schemas.registry import Procedure, ProcedureKind, Registry

__all__ = ("DEFAULT_OUTPUT", "GENERATOR_COMMAND", "TypeScriptError", "main", "render_app_router")

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT: Final = ROOT / "clients" / "ts" / "src" / "app-router.d.ts"
GENERATOR_COMMAND: Final = "python -m server typescript"

Mode = Literal["input", "output"]

_LINE_LENGTH: Final = 120
_RESERVED_NAMES: Final = ("AppRouter", "AppRouterRoot", "Tracked")
"""Names the file declares besides the wire types."""

_REF_PREFIX: Final = "#/$defs/"
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_PROCEDURE_TYPES: Final = {
    ProcedureKind.QUERY: "TRPCQueryProcedure",
    ProcedureKind.MUTATION: "TRPCMutationProcedure",
    ProcedureKind.SUBSCRIPTION: "TRPCSubscriptionProcedure",
}
# Schema keys that only annotate a value: they change nothing in its TypeScript type.
_ANNOTATIONS: Final = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "uniqueItems",
        "contentEncoding",
        "discriminator",
        "additionalProperties",
        "required",
        "properties",
        "type",
        "items",
        "prefixItems",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
_DOCUMENTED_CONSTRAINTS: Final = (
    "format",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
)


class TypeScriptError(ValueError):
    """The registry holds a type this generator cannot express in TypeScript."""


@dataclass(frozen=True, slots=True)
class _Component:
    name: str
    schema: dict[str, Any]
    omitted_when_default: frozenset[str]
    """Output properties the server may leave out (``omit_defaults`` or ``UNSET``); every other one is always sent."""


def render_app_router(registry: Registry) -> str:
    """The ``.d.ts`` text for ``registry``: deterministic, so that a stale committed copy shows up in a diff."""
    return _Generator(registry).render()


class _Generator:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        procedures = list(registry)
        inputs = [p.input for p in procedures if p.input is not None]
        outputs = [p.output for p in procedures]
        roots, definitions = codec.json_schema_components([*inputs, *outputs], ref_template=_REF_PREFIX + "{name}")
        self.input_roots: list[dict[str, Any]] = list(roots[: len(inputs)])
        self.output_roots: list[dict[str, Any]] = list(roots[len(inputs) :])
        self.root_by_type: dict[tuple[Mode, int], dict[str, Any]] = {}
        for type_, root in zip(inputs, self.input_roots, strict=True):
            self.root_by_type["input", id(type_)] = root
        for type_, root in zip(outputs, self.output_roots, strict=True):
            self.root_by_type["output", id(type_)] = root
        omitted = _omitted_output_fields([*inputs, *outputs])
        self.components = {
            name: _Component(name, schema, omitted.get(name, frozenset())) for name, schema in definitions.items()
        }
        for name in self.components:
            if not _IDENTIFIER.match(_identifier(name)):
                raise TypeScriptError(f"wire type {name!r} has no usable TypeScript name")
        self.used_in: dict[Mode, set[str]] = {
            "input": self._reachable(self.input_roots),
            "output": self._reachable(self.output_roots),
        }
        self.split = self._split_components()
        self.names: dict[Mode, dict[str, str]] = {"input": {}, "output": {}}
        for name in self.components:
            self.names["output"][name] = _identifier(name)
            self.names["input"][name] = _identifier(name) + ("Input" if name in self.split else "")
        declared = [self.names["output"][n] for n in self.components] + [self.names["input"][n] for n in self.split]
        declared += list(_RESERVED_NAMES)
        clashes = sorted({n for n in declared if declared.count(n) > 1})
        if clashes:
            raise TypeScriptError(f"two wire types would share the TypeScript name {', '.join(clashes)}")

    # --- analysis -----------------------------------------------------------------------------------------------

    def _reachable(self, roots: Iterable[Any]) -> set[str]:
        seen: set[str] = set()
        pending = [name for root in roots for name in _refs(root)]
        while pending:
            name = pending.pop()
            if name not in seen:
                seen.add(name)
                pending.extend(_refs(self.components[name].schema))
        return seen

    def _split_components(self) -> set[str]:
        """Components used by inputs and outputs whose two forms differ, directly or through what they reference."""
        both = self.used_in["input"] & self.used_in["output"]
        split = {
            name
            for name in both
            if self._optional(self.components[name], "input") != self._optional(self.components[name], "output")
        }
        changed = True
        while changed:
            changed = False
            for name in sorted(both - split):
                if any(ref in split for ref in _refs(self.components[name].schema)):
                    split.add(name)
                    changed = True
        return split

    @staticmethod
    def _optional(component: _Component, mode: Mode) -> frozenset[str]:
        properties = component.schema.get("properties", {})
        if mode == "output":
            return frozenset(p for p in properties if p in component.omitted_when_default)
        required = set(component.schema.get("required", ()))
        return frozenset(p for p in properties if p not in required)

    # --- rendering ----------------------------------------------------------------------------------------------

    def render(self) -> str:
        kinds = {p.kind for p in self.registry}
        imports = sorted({"TRPCBuiltRouter", "TRPCDefaultErrorShape", *(_PROCEDURE_TYPES[k] for k in kinds)})
        lines = [
            f"// Generated by `{GENERATOR_COMMAND}` from the procedure registry (schemas/router.py). Do not edit:",
            f"// change the msgspec Structs under schemas/, then run `{GENERATOR_COMMAND}` again.",
            '// Money (USD) is a plain decimal string ("0.00325", "0.00000015", "0"), ids are UUID strings,',
            "// times are ISO 8601 strings.",
            "",
            "import type {",
            *(f"  {name}," for name in imports),
            "} from '@trpc/server';",
            "",
            "/** A resumable subscription's event as @trpc/client delivers it; a reconnect resumes after `id`. */",
            "export type Tracked<TData> = {",
            "  id: string;",
            "  data: TData;",
            "};",
            "",
        ]
        declarations: list[tuple[str, list[str]]] = []
        for name, component in self.components.items():
            modes: list[Mode] = []
            if name in self.used_in["output"]:
                modes.append("output")
            if name in self.used_in["input"] and (name in self.split or "output" not in modes):
                modes.append("input")
            for mode in modes:
                declarations.append((self.names[mode][name], self._declaration(component, mode)))
        for _, declaration in sorted(declarations):
            lines.extend(declaration)
            lines.append("")
        lines.extend(self._router())
        return "\n".join(lines) + "\n"

    def _declaration(self, component: _Component, mode: Mode) -> list[str]:
        schema = component.schema
        lines = _doc(_description(schema), "")
        name = self.names[mode][component.name]
        if schema.get("type") == "object" and "properties" in schema:
            body = self._object(schema, mode, self._optional(component, mode), indent="")
            lines.append(f"export type {name} = {body};")
        else:
            type_ = self._type(schema, mode, indent="")
            if "anyOf" in schema:
                members = _distinct(self._type(option, mode, indent="") for option in schema["anyOf"])
            else:
                members = _distinct(_literal(value) for value in schema.get("enum", ()))
            if len(f"export type {name} = {type_};") > _LINE_LENGTH and all("\n" not in m for m in members):
                lines.append(f"export type {name} =")
                lines.extend(f"  | {member}" for member in members)
                lines[-1] += ";"
            else:
                lines.append(f"export type {name} = {type_};")
        return lines

    def _object(self, schema: dict[str, Any], mode: Mode, optional: frozenset[str], indent: str) -> str:
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        if not properties:
            if extra is False:
                return "Record<string, never>"
            return f"Record<string, {self._type(extra, mode, indent) if isinstance(extra, dict) else 'unknown'}>"
        inner = indent + "  "
        lines = ["{"]
        for key, value in properties.items():
            lines.extend(_doc(self._property_doc(value, mode), inner))
            mark = "?" if key in optional else ""
            lines.append(f"{inner}{_property_key(key)}{mark}: {self._type(value, mode, inner)};")
        if isinstance(extra, dict):
            lines.append(f"{inner}[key: string]: {self._type(extra, mode, inner)};")
        lines.append(indent + "}")
        return "\n".join(lines)

    def _property_doc(self, schema: dict[str, Any], mode: Mode) -> str:
        facets = dict(schema)
        for option in schema.get("anyOf", ()):
            if isinstance(option, dict) and option.get("type") != "null" and "$ref" not in option:
                facets = {**option, **facets}
        description = _description(facets)
        tags = [f"@{key} {_tag_value(facets[key])}" for key in _DOCUMENTED_CONSTRAINTS if key in facets]
        if mode == "input" and "default" in schema:
            tags.append(f"@default {json.dumps(schema['default'])}")
        return "\n".join([description, *tags] if description else tags)

    def _type(self, schema: Any, mode: Mode, indent: str) -> str:
        if schema is True or schema == {}:
            return "unknown"
        if schema is False:
            return "never"
        if not isinstance(schema, dict):
            raise TypeScriptError(f"unexpected JSON schema node {schema!r}")
        unknown_keys = sorted(set(schema) - _ANNOTATIONS)
        if unknown_keys:
            raise TypeScriptError(f"JSON schema keyword(s) {', '.join(unknown_keys)} are not supported: {schema}")
        if "$ref" in schema:
            return self.names[mode][_ref_name(schema["$ref"])]
        if "anyOf" in schema:
            return _union(self._type(option, mode, indent) for option in schema["anyOf"])
        if "const" in schema:
            return _literal(schema["const"])
        if "enum" in schema:
            return _union(_literal(value) for value in schema["enum"])
        kind = schema.get("type")
        if isinstance(kind, list):
            return _union(self._type({**schema, "type": k}, mode, indent) for k in kind)
        if kind in ("string", "boolean", "null"):
            return str(kind)
        if kind in ("integer", "number"):
            return "number"
        if kind == "array":
            return self._array(schema, mode, indent)
        if kind == "object":
            # msgspec declares Structs as components: an inline object is a dict (or a hand-written schema).
            required = set(schema.get("required", ()))
            optional = frozenset(p for p in schema.get("properties", {}) if p not in required)
            return self._object(schema, mode, optional, indent)
        if kind is None:
            return "unknown"
        raise TypeScriptError(f"JSON schema type {kind!r} is not supported")

    def _array(self, schema: dict[str, Any], mode: Mode, indent: str) -> str:
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if prefix is None:
            item = self._type(items, mode, indent)
            return f"({item})[]" if _is_union(item) else f"{item}[]"
        members = [self._type(member, mode, indent) for member in prefix]
        if items is not False:
            members.append(f"...{self._array({'type': 'array', 'items': items}, mode, indent)}")
        return f"[{', '.join(members)}]"

    def _router(self) -> list[str]:
        # tRPC routers nest at every dot of a path: `admin.usage.byModel` is `admin: { usage: { byModel: ... } }`.
        tree: dict[str, Any] = {}
        for procedure in self.registry:
            *routers, name = procedure.path.split(".")
            node = tree
            for router in routers:
                node = node.setdefault(router, {})
                if not isinstance(node, dict):
                    raise TypeScriptError(f"{procedure.path}: a procedure cannot also be a router")
            if name in node:
                raise TypeScriptError(f"{procedure.path}: a router cannot also be a procedure")
            node[name] = procedure
        return [
            "/** The root types of the router: no transformer (JSON as is), tRPC's default error shape. */",
            "export type AppRouterRoot = {",
            "  ctx: object;",
            "  meta: object;",
            "  errorShape: TRPCDefaultErrorShape;",
            "  transformer: false;",
            "};",
            "",
            "/** Every Tollbooth procedure, for `createTRPCClient<AppRouter>(...)`. */",
            "export type AppRouter = TRPCBuiltRouter<",
            "  AppRouterRoot,",
            "  {",
            *self._record(tree, "    "),
            "  }",
            ">;",
        ]

    def _record(self, tree: dict[str, Any], indent: str) -> list[str]:
        lines: list[str] = []
        for key in sorted(tree):
            entry = tree[key]
            if isinstance(entry, dict):
                lines.append(f"{indent}{_property_key(key)}: {{")
                lines.extend(self._record(entry, indent + "  "))
                lines.append(f"{indent}}};")
            else:
                lines.extend(_doc(_procedure_doc(entry), indent))
                lines.append(f"{indent}{_property_key(key)}: {self._procedure(entry)};")
        return lines

    def _procedure(self, procedure: Procedure[Any, Any]) -> str:
        if procedure.input is None:
            input_type = "void"
        else:
            root = self.root_by_type["input", id(procedure.input)]
            input_type = self._type(root, "input", "      ")
            if self._all_optional(root):
                # @trpc/client lets a caller leave out an input whose type admits undefined: `.query()`.
                input_type += " | undefined"
        output_type = self._type(self.root_by_type["output", id(procedure.output)], "output", "      ")
        if procedure.kind is ProcedureKind.SUBSCRIPTION:
            event = f"Tracked<{output_type}>" if procedure.resumable else output_type
            output_type = f"AsyncIterable<{event}, void, any>"
        return f"{_PROCEDURE_TYPES[procedure.kind]}<{{ input: {input_type}; output: {output_type}; meta: object }}>"

    def _all_optional(self, root: dict[str, Any]) -> bool:
        """Whether an input (a Struct) has no required field: the server then accepts no input at all."""
        schema = self.components[_ref_name(root["$ref"])].schema if "$ref" in root else root
        return schema.get("type") == "object" and not schema.get("required")


# --- helpers ------------------------------------------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield _ref_name(value)
            elif key != "discriminator":  # its mapping repeats the anyOf's references
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _ref_name(reference: str) -> str:
    if not reference.startswith(_REF_PREFIX):
        raise TypeScriptError(f"unexpected $ref {reference!r}")
    return reference[len(_REF_PREFIX) :]


def _identifier(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_$]", "_", name).rstrip("_")


def _omitted_output_fields(types: Sequence[Any]) -> dict[str, frozenset[str]]:
    """By Struct name: the fields the encoder leaves out when they hold their default (or ``UNSET``)."""
    found: dict[str, frozenset[str]] = {}
    seen: set[int] = set()

    def visit(value: Any) -> None:
        if isinstance(value, tuple | list):
            for item in value:
                visit(item)
            return
        if not isinstance(value, msgspec.inspect.Type | msgspec.inspect.Field) or id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, msgspec.inspect.StructType):
            omit_defaults = value.cls.__struct_config__.omit_defaults
            omitted = frozenset(
                field.encode_name
                for field in value.fields
                if (omit_defaults and not field.required) or field.default is msgspec.UNSET
            )
            if omitted:
                found[value.cls.__name__] = omitted
        for name in value.__struct_fields__:
            visit(getattr(value, name))

    visit(msgspec.inspect.multi_type_info(types))
    return found


def _union(members: Iterable[str]) -> str:
    return " | ".join(_distinct(members))


def _is_union(type_: str) -> bool:
    """Whether ``type_`` has a ``|`` outside brackets and string literals (so ``T[]`` needs ``(T)[]``)."""
    depth = 0
    quoted = False
    escaped = False
    for char in type_:
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char in "({[<":
            depth += 1
        elif char in ")}]>":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


def _distinct(members: Iterable[str]) -> list[str]:
    unique: list[str] = []
    for member in members:
        if member not in unique:
            unique.append(member)
    return unique


def _literal(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value)
    raise TypeScriptError(f"literal {value!r} has no TypeScript literal type")


def _property_key(key: str) -> str:
    return key if _IDENTIFIER.match(key) else json.dumps(key)


def _description(schema: dict[str, Any]) -> str:
    description = schema.get("description")
    return inspect.cleandoc(description) if isinstance(description, str) else ""


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _procedure_doc(procedure: Procedure[Any, Any]) -> str:
    return f"{procedure.description}\n\n{procedure.kind.value}, access: {procedure.access.value}"


def _doc(text: str, indent: str) -> list[str]:
    if not text:
        return []
    body = [line.rstrip() for line in text.replace("*/", "*\\/").splitlines()]
    if len(body) == 1:
        return [f"{indent}/** {body[0]} */"]
    return [f"{indent}/**", *(f"{indent} *{' ' + line if line else ''}" for line in body), f"{indent} */"]


# --- command ------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the .d.ts (default: {DEFAULT_OUTPUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the file differs from what would be written"
    )


def main(out: Path = DEFAULT_OUTPUT, *, check: bool = False) -> int:
    from schemas.router import APP_REGISTRY

    text = render_app_router(APP_REGISTRY)
    current = out.read_text(encoding="utf-8") if out.exists() else None
    if check:
        if current == text:
            print(f"{out}: up to date")
            return 0
        diff = difflib.unified_diff(
            (current or "").splitlines(keepends=True), text.splitlines(keepends=True), str(out), "generated"
        )
        sys.stdout.writelines(list(diff)[:200])
        print(f"{out} is stale: run `{GENERATOR_COMMAND}`", file=sys.stderr)
        return 1
    if current != text:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    else:
        print(f"{out}: already up to date")
    return 0
