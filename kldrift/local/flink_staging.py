"""What Beam's Flink job server stages with a job for a cluster on this machine: the launcher jar
only, not the ~157 MB of jars on its class path.

Beam's job server (2.70, `FlinkJobInvoker`) stages every file its class loader sees (a ClassGraph
scan of the launcher jar's ``Class-Path``) to a remote cluster with each job: ~26 s of a
submission here. Which files is a Java option, ``pipelineResourcesDetectorFactoryClass`` (Beam's
``PipelineResourcesOptions``; from Python ``--pipeline_resources_detector_factory_class``,
declared in `kldrift.pipeline.options`). `detector_class` is that factory, written into the
launcher jar (`kldrift.local.flink.write_launcher_jar`). It is the compiled form of::

    package kldrift.flink;
    public final class LauncherJarOnly
        implements PipelineResourcesDetector.Factory, PipelineResourcesDetector {
      public static LauncherJarOnly create() { return new LauncherJarOnly(); }
      public PipelineResourcesDetector getPipelineResourcesDetector() { return this; }
      public List<String> detect(ClassLoader loader) {
        return Collections.singletonList("<the launcher jar's path>");
      }
    }

written here byte by byte (Java 11 class file, no branches, so no stack map frames), so that the
set-up needs no JDK. The launcher jar's ``Class-Path`` holds absolute ``file:`` URLs, so the one
staged jar gives the cluster's user-code class loader (child-first, as before) every jar of the
job server from this machine's disk. A cluster on other hosts does not have those files: the
option is for a cluster on this machine (`kldrift local flink`) only.
"""

from __future__ import annotations

import struct
from pathlib import Path

DETECTOR_CLASS = "kldrift.flink.LauncherJarOnly"
"""The factory's class name (the value of ``--pipeline_resources_detector_factory_class``)."""
DETECTOR_ENTRY = DETECTOR_CLASS.replace(".", "/") + ".class"
"""Its entry in the launcher jar."""

_RESOURCES = "org/apache/beam/sdk/util/construction/resources/"
_JAVA_11 = 55
_PUBLIC, _STATIC, _FINAL, _SUPER = 0x0001, 0x0008, 0x0010, 0x0020


class _ConstantPool:
    """A class file's constant pool: each entry added once, referred to by its index."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.index: dict[bytes, int] = {}

    def _add(self, entry: bytes) -> int:
        if entry not in self.index:
            self.entries.append(entry)
            self.index[entry] = len(self.entries)
        return self.index[entry]

    def utf8(self, text: str) -> int:
        data = text.encode()
        return self._add(struct.pack(">BH", 1, len(data)) + data)

    def cls(self, name: str) -> int:
        return self._add(struct.pack(">BH", 7, self.utf8(name)))

    def string(self, text: str) -> int:
        return self._add(struct.pack(">BH", 8, self.utf8(text)))

    def method(self, owner: str, name: str, descriptor: str) -> int:
        name_and_type = self._add(struct.pack(">BHH", 12, self.utf8(name), self.utf8(descriptor)))
        return self._add(struct.pack(">BHH", 10, self.cls(owner), name_and_type))

    def encoded(self) -> bytes:
        return struct.pack(">H", len(self.entries) + 1) + b"".join(self.entries)


def _method(
    pool: _ConstantPool,
    flags: int,
    name: str,
    descriptor: str,
    code: bytes,
    stack: int,
    locals_: int,
) -> bytes:
    body = struct.pack(">HHI", stack, locals_, len(code)) + code + struct.pack(">HH", 0, 0)
    code_attribute = struct.pack(">HI", pool.utf8("Code"), len(body)) + body
    return struct.pack(">HHHH", flags, pool.utf8(name), pool.utf8(descriptor), 1) + code_attribute


def detector_class(launcher_jar: Path) -> bytes:
    """The class file of `DETECTOR_CLASS`, whose detector names `launcher_jar` only."""
    this = DETECTOR_CLASS.replace(".", "/")
    pool = _ConstantPool()
    this_index, super_index = pool.cls(this), pool.cls("java/lang/Object")
    interfaces = [pool.cls(_RESOURCES + "PipelineResourcesDetector$Factory")]
    interfaces.append(pool.cls(_RESOURCES + "PipelineResourcesDetector"))
    object_init = pool.method("java/lang/Object", "<init>", "()V")
    this_init = pool.method(this, "<init>", "()V")
    singleton = pool.method(
        "java/util/Collections", "singletonList", "(Ljava/lang/Object;)Ljava/util/List;"
    )
    path = pool.string(str(launcher_jar))
    if path > 0xFF:
        raise AssertionError("ldc needs a constant pool index below 256")
    # aload_0 = 2a, invokespecial = b7, return = b1, new = bb, dup = 59, areturn = b0,
    # ldc = 12, invokestatic = b8
    methods = [
        _method(pool, _PUBLIC, "<init>", "()V", b"\x2a\xb7" + struct.pack(">H", object_init) + b"\xb1", 1, 1),
        _method(
            pool, _PUBLIC | _STATIC, "create", f"()L{this};",
            b"\xbb" + struct.pack(">H", this_index) + b"\x59\xb7" + struct.pack(">H", this_init) + b"\xb0",
            2, 0,
        ),
        _method(
            pool, _PUBLIC, "getPipelineResourcesDetector",
            f"()L{_RESOURCES}PipelineResourcesDetector;", b"\x2a\xb0", 1, 1,
        ),
        _method(
            pool, _PUBLIC, "detect", "(Ljava/lang/ClassLoader;)Ljava/util/List;",
            b"\x12" + bytes([path]) + b"\xb8" + struct.pack(">H", singleton) + b"\xb0", 1, 2,
        ),
    ]  # fmt: skip
    return (
        struct.pack(">IHH", 0xCAFEBABE, 0, _JAVA_11)
        + pool.encoded()
        + struct.pack(">HHHH", _PUBLIC | _FINAL | _SUPER, this_index, super_index, len(interfaces))
        + b"".join(struct.pack(">H", i) for i in interfaces)
        + struct.pack(">HH", 0, len(methods))
        + b"".join(methods)
        + struct.pack(">H", 0)
    )
