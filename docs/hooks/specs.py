"""MkDocs hook: renders the hub's AsyncAPI and OpenAPI documents into the reference pages, and ships both documents
with the site (asyncapi.json, openapi.json), all at build time and offline (no renderer fetched from a CDN)."""

from __future__ import annotations

import json
from typing import Any

from mkdocs.structure.files import File, Files

from runcast import specs


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"][:20])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_type(s) for s in schema[key])
    t = schema.get("type")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array":
        return f"array of {_type(schema.get('items', {}))}"
    return t or "any"


def _fields(schema: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    rows = ["| field | type | required | notes |", "|---|---|---|---|"]
    for name, sub in props.items():
        if name in skip:
            continue
        note = (sub.get("description") or sub.get("title") or "").replace("\n", " ").replace("|", "\\|")
        limits = [f"{k} {sub[k]}" for k in ("minLength", "maxLength", "minimum", "maximum") if k in sub]
        if "default" in sub:
            limits.append(f"default `{json.dumps(sub['default'])}`")
        rows.append(f"| `{name}` | {_type(sub)} | {'yes' if name in required else ''} | "
                    f"{'; '.join(filter(None, [note, *limits]))} |")
    return "\n".join(rows) if len(rows) > 2 else "No fields besides `type`."


def asyncapi_markdown() -> str:
    doc = specs.asyncapi()
    schemas, messages = doc["components"]["schemas"], doc["components"]["messages"]
    out: list[str] = []
    groups = [("Commands a client sends", "Command"), ("Control frames", "Frame"), ("Run events", "Event")]
    for title, suffix in groups:
        out.append(f"## {title}\n")
        for key, msg in messages.items():
            if not key.endswith(suffix):
                continue
            schema = schemas[msg["payload"]["$ref"].rsplit("/", 1)[1]]
            out.append(f"### `{msg['name']}`\n")
            if suffix == "Event":
                out.append("Envelope: `run_id`, `seq`, `ts`, `type`. Its `data`:\n")
                out.append(_fields(schema["properties"]["data"]) + "\n")
            else:
                out.append(_fields(schema, skip=("type",)) + "\n")
    out.append("## Error codes\n")
    out.append(", ".join(f"`{c}`" for c in specs.error_codes()) + "\n")
    out.append("## Close codes\n")
    out.append("| code | meaning |\n|---|---|\n" + "\n".join(
        f"| {c} | {d} |" for c, d in doc["components"]["x-close-codes"].items()) + "\n")
    return "\n".join(out)


def openapi_markdown() -> str:
    doc = specs.openapi()
    out: list[str] = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            out.append(f"## `{method.upper()} {path}`\n\n{op.get('summary', '')}\n")
            params = op.get("parameters", [])
            if params:
                out.append("| parameter | in | type |\n|---|---|---|\n" + "\n".join(
                    f"| `{p['name']}` | {p['in']} | {_type(p['schema'])} |" for p in params) + "\n")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                out.append("Body (JSON):\n\n" + _fields(body) + "\n")
            out.append("Answers: " + ", ".join(f"`{s}` {r.get('description', '')}" for s, r in op["responses"].items())
                       + "\n")
    return "\n".join(out)


def on_files(files: Files, config: Any) -> Files:
    for name, build in (("asyncapi.json", specs.asyncapi), ("openapi.json", specs.openapi)):
        files.append(File.generated(config, name, content=json.dumps(build(), indent=2)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if "<!-- runcast:asyncapi -->" in markdown:
        markdown = markdown.replace("<!-- runcast:asyncapi -->", asyncapi_markdown())
    if "<!-- runcast:openapi -->" in markdown:
        markdown = markdown.replace("<!-- runcast:openapi -->", openapi_markdown())
    return markdown
