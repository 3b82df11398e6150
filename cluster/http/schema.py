"""The OpenAPI schema of job specs, built from the spec dataclasses' own fields, defaults and attribute
docstrings (the one line under each field), so the API documents exactly what ``parse_job`` accepts."""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import MISSING, fields, is_dataclass
from functools import cache

from cluster.jobs import JOB_KINDS

SCALARS = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"}, "bool": {"type": "boolean"}}


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string right under it), the subclass's winning over its bases'."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                    docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def _type_schema(annotation: str, nested: type | None, refs: dict[str, dict]) -> dict:
    """JSON schema of a field's annotation (written as text: the spec modules use postponed annotations)."""
    if nested is not None:
        refs[nested.__name__] = dataclass_schema(nested, refs)
        return {"$ref": f"#/components/schemas/{nested.__name__}"}
    parts = [p.strip() for p in annotation.split("|")]
    if len(parts) > 1:
        options = [_type_schema(p, None, refs) for p in parts if p != "None"]
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        return {**schema, "nullable": True} if "None" in parts else schema
    if annotation in SCALARS:
        return dict(SCALARS[annotation])
    if annotation.startswith("list["):
        inner = annotation[5:-1]
        return {"type": "array", "items": SCALARS.get(inner, {"type": "object"})}
    return {"type": "object"}


def _nested_class(spec_field) -> type | None:
    factory = spec_field.default_factory
    return factory if factory is not MISSING and is_dataclass(factory) else None


def dataclass_schema(cls: type, refs: dict[str, dict], hidden: frozenset[str] = frozenset()) -> dict:
    docs = field_docs(cls)
    properties = {}
    for spec_field in fields(cls):
        if spec_field.name in hidden:
            continue
        annotation = spec_field.type if isinstance(spec_field.type, str) else getattr(spec_field.type, "__name__", "")
        nested = _nested_class(spec_field)
        if annotation.startswith("list[") and annotation[5:-1] not in SCALARS:  # a list of dataclasses
            item = _list_item_class(cls, annotation[5:-1])
            schema = {"type": "array", "items": _type_schema("", item, refs) if item else {"type": "object"}}
        else:
            schema = _type_schema(annotation, nested, refs)
        if spec_field.default is not MISSING:
            schema["default"] = spec_field.default
        if spec_field.name in docs:
            schema["description"] = docs[spec_field.name]
        properties[spec_field.name] = schema
    doc = inspect.getdoc(cls) or ""
    return {"type": "object", "title": cls.__name__, "description": doc, "properties": properties, "additionalProperties": False}


def _list_item_class(cls: type, name: str) -> type | None:
    found = getattr(inspect.getmodule(cls), name, None)
    return found if isinstance(found, type) and is_dataclass(found) else None


@cache
def spec_schemas() -> dict[str, dict]:
    """Component schemas: one per job kind (``<Kind>Spec``: its fields, "job" naming the kind) and their
    nested mappings (parallel, cache, segments)."""
    refs: dict[str, dict] = {}
    for kind in JOB_KINDS.values():
        spec_cls = kind.spec_class()
        schema = dataclass_schema(spec_cls, refs, spec_cls.hidden)
        schema["properties"] = {
            "job": {"type": "string", "enum": [kind.name], "default": "image", "description": "The job kind."},
            **schema["properties"],
        }
        refs[f"{kind.name.capitalize()}Spec"] = schema
    return refs


def install(app) -> None:
    """Add the spec schemas to the app's OpenAPI document (built once, on first request of /openapi.json)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            document.setdefault("components", {}).setdefault("schemas", {}).update(spec_schemas())
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi


def spec_ref() -> dict:
    """Schema of any job kind's spec."""
    return {"oneOf": [{"$ref": f"#/components/schemas/{k.capitalize()}Spec"} for k in JOB_KINDS]}
