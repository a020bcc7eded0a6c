"""One table of every shipped dataset, for the course's first look."""

from __future__ import annotations

import pandas as pd

from labkit.data.loading import LABEL, load
from labkit.data.registry import SCHEMAS


def overview(names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Rows, features, positive rate and missing cells of each dataset, computed from the files."""
    rows = []
    for name in names or tuple(SCHEMAS):
        ds = load(name)
        features = ds.frame[ds.schema.feature_names]
        rows.append({
            "dataset": name,
            "kind": ds.schema.kind,
            "rows": len(ds),
            "features": len(ds.schema.features),
            "positive class": ds.schema.task.positive_name,
            "positive rate": round(float(ds.frame[LABEL].mean()), 3),
            "missing cells %": round(100 * float(features.isna().to_numpy().mean()), 1),
            "license": ds.schema.license.split(" (")[0],
        })
    return pd.DataFrame(rows).set_index("dataset")
