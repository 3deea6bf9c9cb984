"""The protobuf messages and enums of proto/vpipe.proto, for building requests and reading replies.

This module only re-exports generated code: everything here comes from ``vpipe_pb2.py``,
which ``protoc --python_out=bindings/python/vpipe -Iproto proto/vpipe.proto`` (``make proto``)
generates from the schema. Do not edit ``vpipe_pb2.py`` by hand; change the schema and
regenerate it.

    from vpipe import pb
    request = pb.PlanRequest()
    request.options.micro_batches = 8
    request.options.planner = pb.PLANNER_TIME_BALANCED
"""

from .vpipe_pb2 import *  # noqa: F401,F403  (generated code: the schema's messages and enums)
