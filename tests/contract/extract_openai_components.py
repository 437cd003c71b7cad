#!/usr/bin/env python3
"""Copy the component schemas our responses must follow out of OpenAI's OpenAPI document
(github.com/openai/openai-openapi, openapi.json, MIT licence), with every schema they reference.

    python tests/contract/extract_openai_components.py path/to/openapi.json COMMIT > tests/contract/openai_components.json
"""

from __future__ import annotations

import json
import sys

ROOTS = ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "CreateCompletionResponse",
         "CreateEmbeddingResponse")


def references(node, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            references(value, found)
    elif isinstance(node, list):
        for value in node:
            references(value, found)


def main() -> int:
    document = json.load(open(sys.argv[1]))
    schemas = document["components"]["schemas"]
    wanted, queue = set(), list(ROOTS)
    while queue:
        name = queue.pop()
        if name in wanted:
            continue
        wanted.add(name)
        found: set[str] = set()
        references(schemas[name], found)
        queue += sorted(found - wanted)
    out = {"x-source": f"https://github.com/openai/openai-openapi/blob/{sys.argv[2]}/openapi.json (OpenAPI {document['openapi']})",
           "components": {"schemas": {name: schemas[name] for name in sorted(wanted)}}}
    json.dump(out, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
