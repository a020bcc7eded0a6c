"""Annotation through an OpenAI-compatible server, one request at a time against several in flight.

    .venv/bin/python benchmarks/annotate_in_flight.py            # writes docs/annotation.md's block
    .venv/bin/python benchmarks/annotate_in_flight.py --no-doc

Starts `labkit serve` (the pocket LLM) in its own process, then annotates the heart test split
(token mode: one forward pass per record on the server) with `OpenAIAnnotator(in_flight=k)`, no
cache, `--repeats` times per k, and prints records per second (mean and spread over the repeats)
and whether every k gave the same answers as k = 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openai
import pandas as pd

import labkit.data as data
from labkit.annotate import OpenAIAnnotator
from labkit.docblocks import write_block

DOC = Path(__file__).resolve().parents[1] / "docs" / "annotation.md"


def start_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, "-m", "labkit", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0,
                           timeout=2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            client.models.list()
            return server
        except openai.APIConnectionError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"labkit serve did not answer on port {port} within 120 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in-flight", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    dataset = data.load("heart")
    texts = [data.to_text(r, dataset.schema) for r in dataset.features("test").to_dict(orient="records")]
    server = start_server(args.port)
    rows, answers = [], {}
    try:
        for k in args.in_flight:
            for repeat in range(args.repeats):
                annotator = OpenAIAnnotator("pocket-llm", "token", api_key_env=None, in_flight=k,
                                            base_url=f"http://127.0.0.1:{args.port}/v1", progress=False)
                start = time.perf_counter()
                frame = annotator.annotate(texts, dataset.schema.task)
                seconds = time.perf_counter() - start
                rows.append({"in flight": k, "repeat": repeat, "records/s": len(texts) / seconds})
                answers[k] = frame["value"].to_numpy()
    finally:
        server.kill()
    runs = pd.DataFrame(rows)
    table = runs.groupby("in flight")["records/s"].agg(["mean", "std"]).round(1)
    table.columns = ["records/s (mean)", "records/s (sd)"]
    first = answers[args.in_flight[0]]
    table[f"same answers as {args.in_flight[0]} in flight"] = [
        bool(np.allclose(answers[k], first, rtol=1e-5)) for k in table.index]
    text = (f"Measured {time.strftime('%d %b %Y')} (`python benchmarks/annotate_in_flight.py`; 2 cores, "
            f"`labkit serve` with the pocket LLM in its own process, the {len(texts)} heart test records in "
            f"token mode, no cache, {args.repeats} repeats):\n\n" + table.to_markdown())
    print(text)
    if not args.no_doc:
        write_block(DOC, "annotate_in_flight benchmark", text)
        print(f"\nwrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
