"""The shipped datasets: one schema file per dataset in data/datasets/ (<name>.yaml beside its CSV,
read by labkit.data.schema_file), so a new table needs no change to the code.

Figures (rows, columns, class counts) are the documented ones from data/datasets/SOURCES.md; the tests
check every file against them. Units and codings follow each dataset's official description.
"""

from __future__ import annotations

from labkit.data.schema import Schema
from labkit.data.schema_file import SUFFIXES, SchemaError, read_schema
from labkit.paths import DATASETS_DIR

# The order in which tables and figures list them: the five SERVAL tables, the five other tables,
# then the text task; a schema file not named here comes after them, by name.
ORDER = ("heart", "early_diabetes", "ilpd", "hcv", "pima",
         "cleveland", "heart_failure", "thyroid", "breast_cancer", "cirrhosis", "abstracts")


def _shipped() -> dict[str, Schema]:
    schemas = {}
    for path in sorted(p for p in DATASETS_DIR.iterdir() if p.suffix in SUFFIXES):
        schema = read_schema(path)
        if schema.name != path.stem:
            raise SchemaError(f"{path}: name {schema.name!r} should be the file's name, {path.stem!r}")
        schemas[schema.name] = schema
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(schemas.items(), key=lambda item: (rank.get(item[0], len(ORDER)), item[0])))


SCHEMAS: dict[str, Schema] = _shipped()
