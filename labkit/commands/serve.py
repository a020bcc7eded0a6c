"""`labkit serve`: an OpenAI-compatible server over a local model (labkit.serve), until Ctrl-C."""

from __future__ import annotations

import argparse

from labkit.serve import DEFAULT_MAX_TOKENS, create_app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="labkit serve", description=__doc__)
    parser.add_argument("--model", default=None,
                        help="a model folder or hub id (default: the embedded pocket LLM)")
    parser.add_argument("--name", default=None,
                        help="the model id clients ask for (default: the folder's name)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help="tokens generated when a request does not say")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from labkit.loader import load_model, load_tokenizer
    from labkit.paths import POCKET_LLM

    args = parse_args(argv)
    source = args.model if args.model is not None else POCKET_LLM
    name = args.name or str(source).rstrip("/").split("/")[-1]
    print(f"labkit serve: loading {source} ...", flush=True)
    model, tokenizer = load_model(source), load_tokenizer(source)
    app = create_app(model, tokenizer, name, args.max_tokens)
    print(f"labkit serve: model {name!r} at http://{args.host}:{args.port}/v1 (Ctrl-C stops)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
