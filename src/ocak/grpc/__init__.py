"""ocak's gRPC API (``ocak.v1.Ocak``), served beside HTTP in the same process and loop.

``v1/`` holds the code generated from ``proto/ocak/v1/ocak.proto`` (``make proto``);
``convert`` turns its messages into ocak's request types and back; ``status`` maps
ocak's errors to gRPC status codes; ``auth`` is where keys plug in; ``servicer``
implements the service; ``server`` runs it with health checking and reflection.
"""
