"""docs/configuration.md, written from the config schema: every key, its default, what it accepts
and what it means, so that the defaults have one owner (the schema) and users one page to read.

    python -m billetjax.config_reference            # rewrite docs/configuration.md
    python -m billetjax.config_reference --check    # exit 1 when the page is out of date

`tests/test_config.py` fails when the page and the schema disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from billetjax.config import DEFAULT_CONFIG, ROOT, SCHEMA

PAGE = ROOT / "docs" / "configuration.md"

HEADER = """# Configuration reference

Every key of the configuration, with its default. `schemas/config.schema.yaml` is the one owner of
these defaults (this page is written from it by `python -m billetjax.config_reference`; a test fails
when the two differ). `config.yaml` holds only the default study's own design, the keys marked
*config.yaml* below; set any other key there, or in a file of your own laid over it
(`snakemake --configfile my.yaml`), to change it for your study. What the schema cannot check
(non-finite numbers, rules across keys) is checked by `billetjax/config.py` when the workflow is
parsed, so `snakemake -n` refuses a bad config before any job.
"""


def leaves(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(dotted key, its schema) for every key that has no sub-keys; `[]` stands for a list's items."""
    props = schema.get("properties")
    if props:
        for key, sub in props.items():
            yield from leaves(sub, f"{path}.{key}" if path else key)
        return
    items = schema.get("items")
    if isinstance(items, Mapping) and items.get("properties"):
        yield path, schema
        yield from leaves(items, f"{path}[]")
        return
    yield path, schema


def _accepts(node: Mapping[str, Any]) -> str:
    """What a key accepts, briefly: its type or choices and its range."""
    if "enum" in node:
        return " | ".join(json.dumps(v) for v in node["enum"])
    if "oneOf" in node or "anyOf" in node:
        kinds = [o.get("type", "object") for o in node.get("oneOf", node.get("anyOf", []))]
        return " or ".join(k if isinstance(k, str) else "/".join(k) for k in kinds)
    kind = node.get("type", "")
    kind = "/".join(kind) if isinstance(kind, list) else kind
    bounds = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            bounds.append(f"{sign} {node[key]}")
    if kind == "array" and isinstance(node.get("items"), Mapping):
        inner = node["items"]
        kind = f"list of {inner.get('type', 'object')}"
        for key, sign in (("minimum", ">="), ("maximum", "<=")):
            if key in inner:
                bounds.append(f"each {sign} {inner[key]}")
    return ", ".join([kind, *bounds]) if kind else ", ".join(bounds)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render(schema: Mapping[str, Any], study: Mapping[str, Any]) -> str:
    """The page: the top-level keys, then one table per section."""
    groups: dict[str, list[tuple[str, Mapping[str, Any]]]] = {"": []}
    for path, node in leaves(schema):
        top = path.split(".")[0]
        groups.setdefault(top if "properties" in schema["properties"][top] else "", []).append((path, node))
    lines = [HEADER]
    for top, rows in groups.items():
        parent = schema["properties"].get(top, {})
        lines += ["", f"## `{top}`" if top else "## Top level", ""]
        if parent.get("description"):
            lines += [_cell(parent["description"]), ""]
        lines += ["| key | default | accepts | meaning |", "|---|---|---|---|"]
        for path, node in rows:
            default = json.dumps(node["default"]) if "default" in node else ""
            if _get(study, path) is not None:
                default = (default + "; " if default else "") + "*config.yaml* sets it"
            lines.append(f"| `{path}` | {_cell(default)} | {_cell(_accepts(node))} | "
                         f"{_cell(node.get('description', ''))} |")
    return "\n".join(lines) + "\n"


def _get(values: Mapping[str, Any], path: str) -> Any:
    for key in path.split("."):
        if not isinstance(values, Mapping) or key not in values:
            return None
        values = values[key]
    return values


def current_page() -> str:
    """The page as the schema and config.yaml make it today."""
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    study = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")) or {}
    return render(schema, study)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the page is current")
    args = parser.parse_args(argv)
    page = current_page()
    if args.check:
        if PAGE.read_text(encoding="utf-8") != page:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python -m billetjax.config_reference", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
