"""A small client for ocak's gRPC API: stream a chat answer to the terminal.

Start a server with gRPC on (``ocak serve --grpc-port 50051``), then::

    python examples/grpc_client.py "Name three colors."
    python examples/grpc_client.py --models
    python examples/grpc_client.py --target 10.0.0.5:50051 --key ocak-... "hi"

Ctrl-C cancels the call, which stops the generation on the server at once.
It needs only ``grpcio`` and the generated code in ``ocak.grpc.v1`` (copy that
folder, or generate your own from ``proto/ocak/v1/ocak.proto``).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.grpc.v1 import ocak_pb2_grpc as rpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="Say hello in one sentence.")
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port of ocak's gRPC")
    parser.add_argument("--model", default="default")
    parser.add_argument("--key", default=os.environ.get("OCAK_API_KEY"), help="API key, if any")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--models", action="store_true", help="list the models and exit")
    args = parser.parse_args()

    metadata = (("authorization", f"Bearer {args.key}"),) if args.key else None
    with grpc.insecure_channel(args.target) as channel:
        stub = rpc.OcakStub(channel)
        try:
            if args.models:
                for m in stub.ListModels(pb.ListModelsRequest(), metadata=metadata).models:
                    print(f"{m.id}\t{m.engine}\t{m.state}\tcontext {m.context_length}")
                return 0
            request = pb.ChatRequest(
                model=args.model,
                messages=[pb.ChatMessage(role="user", content=args.prompt)],
                max_tokens=args.max_tokens,
                temperature=args.temperature,  # None leaves it unset: the server's default
            )
            call = stub.Chat(request, metadata=metadata)
            try:
                for message in call:
                    if message.content:
                        print(message.content, end="", flush=True)
                    if message.finish_reason:
                        u = message.usage
                        reason = pb.FinishReason.Name(message.finish_reason)
                        print(
                            f"\n[{reason}; {u.prompt_tokens} prompt + "
                            f"{u.completion_tokens} completion tokens]",
                            file=sys.stderr,
                        )
            except KeyboardInterrupt:
                call.cancel()  # the server stops generating and frees the slot
                print("\n[cancelled]", file=sys.stderr)
                return 130
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
