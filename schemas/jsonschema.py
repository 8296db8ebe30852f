"""JSON Schema files for every topic, generated from the models (``schemas/json/``).

Run ``python -m thumbline.schemas.jsonschema`` (or ``thumbline schemas export``) after
changing a model; a test fails while the committed files differ from the models.
The input topics accept one event or an array of events per message, and their
schemas say so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from thumbline.schemas.topics import Topics
from thumbline.schemas.wire import MAX_BATCH_EVENTS

JSON_DIR = Path(__file__).parent / "json"
_BATCHED = ("feedback", "traces")


def generate() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, one per topic of the registry."""
    topics = Topics.build()
    out: dict[str, dict[str, Any]] = {}
    for attr in ("feedback", "traces", "keyed", "enriched", "rates", "alerts", "dlq"):
        topic = getattr(topics, attr)
        model = topic.model
        schema = model.model_json_schema(mode="validation")
        name = model.__name__
        if attr in _BATCHED:
            defs = schema.pop("$defs", {})
            defs[name] = schema
            schema = {
                "title": f"A message of {topic.name}",
                "description": f"One {name} object, or a JSON array of 1 to "
                f"{MAX_BATCH_EVENTS} of them.",
                "oneOf": [
                    {"$ref": f"#/$defs/{name}"},
                    {
                        "type": "array",
                        "items": {"$ref": f"#/$defs/{name}"},
                        "minItems": 1,
                        "maxItems": MAX_BATCH_EVENTS,
                    },
                ],
                "$defs": defs,
            }
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://thumbline.dev/schemas/{attr}.schema.json",
            **schema,
        }
        out[f"{attr}.schema.json"] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else JSON_DIR):
        sys.stdout.write(f"{path}\n")
