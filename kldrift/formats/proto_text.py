"""`.proto` text (what Java producers register, and what Apicurio, Redpanda and Karapace serve) ->
FileDescriptorProtos, compiled by protoc itself (grpcio-tools' in-process compiler) with the
well-known types it ships (google/protobuf/timestamp.proto, wrappers.proto, ...)."""

from __future__ import annotations

import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from kldrift.formats.registry import UnknownSchema

_COMPILE_LOCK = threading.Lock()
"""protoc's command line interface is not documented as thread-safe: one compile at a time."""


def compile_proto_text(text: str, schema_id: int) -> list[Any]:
    """The file `text` declares and every file it imports, imports first (FileDescriptorProtos,
    as `protoc --include_imports --descriptor_set_out` writes them). UnknownSchema, with protoc's
    first error, when it does not compile (a syntax error, an import kldrift cannot resolve)."""
    # grpc_tools.protoc's main() is this function; importing grpc_tools.protoc would also put an
    # import hook for *_pb2 modules on sys.meta_path of the user's process.
    from google.protobuf import descriptor_pb2
    from grpc_tools import _protoc_compiler

    includes = str(resources.files("grpc_tools") / "_proto")
    name = f"schema-{schema_id}.proto"
    with _COMPILE_LOCK, tempfile.TemporaryDirectory(prefix="kldrift-proto-") as tmp:
        source = Path(tmp) / name
        source.write_text(text, encoding="utf-8")
        out = Path(tmp) / "descriptors.pb"
        arguments = ["protoc", f"-I{tmp}", f"-I{includes}", "--include_imports"]
        arguments += [f"--descriptor_set_out={out}", str(source)]
        if _protoc_compiler.run_main([a.encode() for a in arguments]) != 0 or not out.is_file():
            raise UnknownSchema(
                f"schema id {schema_id} is .proto text protoc does not compile: "
                f"{_first_error(_protoc_compiler, name, tmp, includes)} (schema references to "
                "other subjects are not supported; well-known types are)"
            )
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(descriptors.file)


def _first_error(compiler: Any, name: str, tmp: str, includes: str) -> str:
    """protoc's first error for the file (run_main printed them to stderr only)."""
    try:
        compiler.get_protos(name.encode(), [tmp.encode(), includes.encode()])
    except Exception as err:  # grpc_tools' ProtocErrors: each with filename, line, message
        listed = getattr(err, "errors", None)
        errors = listed() if callable(listed) else [err]
        first = errors[0] if errors else err
        message = getattr(first, "message", str(first))
        line = int(getattr(first, "line", -1))
        where = f"line {line + 1}: " if line >= 0 else f"{_text(getattr(first, 'filename', ''))}: "
        return f"{where}{_text(message)}"[:200]
    return "no descriptor written"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
