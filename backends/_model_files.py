"""Why a runtime could not take a model file, said as the cause and the fix (not the runtime's words).

A truncated file, a file of another kind, an operator the runtime does not know: each runtime says so
in its own words (``INVALID_PROTOBUF``, "not a valid Flatbuffer buffer", "PytorchStreamReader failed
reading zip archive"), which users read as a problem with their input shape. The backends' ``load``
turns those into :class:`ModelFileError`; an input the model does not accept is a different fault
(:func:`input_mismatch`), and only that one gets input-size advice.

Device side: the standard library only (the worker imports this beside the one runtime).
"""

from __future__ import annotations

import re
from pathlib import Path

from edgebench.bench.contracts.errors import one_line

TORCHSCRIPT_FIX = "save one with torch.jit.save(torch.jit.script(model), path)"


class ModelFileError(RuntimeError):
    """The model file itself cannot be run by this runtime: ``reason`` says why and how to fix it.

    ``str()`` is ``NAME: reason``, one line naming the file."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path.name}: {reason}")


def what_it_is(path: Path | str, expected: str = "") -> str:
    """What the first bytes of a file say it is, for a runtime that could not parse it as ``expected``
    ("onnx", "tflite" or "torchscript"): a file that starts like the expected kind is cut short or damaged."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        size = Path(path).stat().st_size
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if size == 0:
        return "the file is empty"
    looks = "tflite" if head[4:8] == b"TFL3" else "torchscript" if head[:4] == b"PK\x03\x04" else ""
    if looks and looks == expected:
        return f"truncated or corrupt: {size} bytes, which start like a {'TFLite flatbuffer' if looks == 'tflite' else 'zip archive'}"
    if looks == "tflite":
        return "it is a TFLite flatbuffer"
    if looks:
        return "it is a zip archive, e.g. a PyTorch or TorchScript file"
    if head[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version), varint-coded
        return f"truncated or corrupt: {size} bytes that do not parse" if expected == "onnx" else "it looks like an ONNX (protobuf) file"
    return f"truncated, corrupt or another kind of file: {size} bytes"


def _kind_fix(found: str, default: str) -> str:
    """The fix for a file of the wrong kind: give it under its own key; otherwise ``default``."""
    if found.startswith("it is a TFLite"):
        return "give it as `tflite:` in the suite"
    if found.startswith("it looks like an ONNX"):
        return "give it as `onnx:` in the suite"
    if found.startswith("it is a zip"):
        return "give it as `torchscript:` (or factory + weights) in the suite"
    return default


def onnx_load_error(path: Path | str, exc: BaseException, runtime: str = "onnxruntime") -> ModelFileError:
    """An onnxruntime session-creation failure, as its cause: not an ONNX file, an unknown op, a too-new opset."""
    text, kind = str(exc), type(exc).__name__
    if kind == "InvalidProtobuf" or "Protobuf parsing failed" in text or "No graph was found" in text:
        found = what_it_is(path, "onnx")
        return ModelFileError(path, f"not an ONNX model file ({found}); {_kind_fix(found, 're-export it')}")
    op = re.search(r"No Op registered for (\S+) with domain_version of (\d+)", text)
    if op:
        node = re.search(r'In Node, \("[^"]*", [^,]+, "([^"]*)"', text)
        domain = (node.group(1) if node else "") or "ai.onnx"
        return ModelFileError(path, f"{runtime} does not know op {op.group(1)!r} (domain {domain}, opset {op.group(2)}); "
                                    "export the model with standard ONNX operators, or run it with an onnxruntime that has this op")
    custom = re.search(r"([\w.]+):(\w+)\(-?\d+\) is not a registered function/op", text)
    if custom:
        return ModelFileError(path, f"{runtime} does not know op {custom.group(2)!r} (custom domain {custom.group(1)}; "
                                    "edgebench registers no custom-op libraries); export the model without it")
    opset = re.search(r"Opset (\d+) is under development.*?till opset (\d+)", text, re.S)
    if opset:
        return ModelFileError(path, f"ONNX opset {opset.group(1)} is newer than this {runtime} supports (up to {opset.group(2)}); "
                                    f"export at opset {opset.group(2)} or lower, or upgrade onnxruntime")
    return ModelFileError(path, f"{runtime} cannot load it ({one_line(text, 300)}); check the file or re-export it")


def tflite_load_error(path: Path | str, exc: BaseException, custom: list[str] | None = None) -> ModelFileError:
    """A LiteRT interpreter failure at load, as its cause: not a flatbuffer, a custom or unknown op.

    ``custom`` are the custom operators the file declares (``litert.custom_ops``), when readable."""
    text = str(exc)
    if "not a valid Flatbuffer" in text or "mmap of size 0" in text:
        found = what_it_is(path, "tflite")
        return ModelFileError(path, f"not a TFLite flatbuffer ({found}); {_kind_fix(found, 're-convert it')}")
    unresolved = re.findall(r"unresolved custom op: ([^\s.]+)", text)
    if unresolved or (custom and "custom op" in text.lower()):
        names = ", ".join(sorted(set(unresolved) | set(custom or [])))
        return ModelFileError(path, f"uses custom op(s) {names} that this LiteRT runtime does not resolve (not registered); "
                                    "re-convert the model without them, or run it where they are registered")
    builtin = re.search(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'", text)
    if builtin:
        return ModelFileError(path, f"this LiteRT runtime does not know builtin op {builtin.group(1)} version {builtin.group(2)} "
                                    "(converted for a newer runtime); upgrade ai-edge-litert where it runs, or convert with an older converter")
    return ModelFileError(path, f"LiteRT cannot load it ({one_line(text, 300)}); check the file or re-convert it")


def torchscript_load_error(path: Path | str, exc: BaseException) -> ModelFileError:
    """A ``torch.jit.load`` failure, as its cause: not a zip archive, or a zip without TorchScript code."""
    text = str(exc)
    if "failed reading zip archive" in text or "failed finding central directory" in text:
        found = what_it_is(path, "torchscript")
        return ModelFileError(path, f"not a TorchScript archive ({found}); {_kind_fix(found, TORCHSCRIPT_FIX)}")
    if "constants.pkl" in text or "failed locating file" in text or "code/" in text:
        return ModelFileError(path, "not a TorchScript archive (a zip without TorchScript code: a state_dict or a pickled model "
                                    f"saved with torch.save?); give it as factory + weights, or {TORCHSCRIPT_FIX}")
    return ModelFileError(path, f"torch cannot load it as TorchScript ({one_line(text, 300)}); {TORCHSCRIPT_FIX}")


#: what runtimes say when a model refuses an input's shape or dtype (as opposed to failing inside a node)
_INPUT_MISMATCH = (
    "Invalid rank for input", "Got invalid dimensions for input", "Unexpected input data type",  # onnxruntime
    "Cannot set tensor: Dimension mismatch", "Cannot set tensor: Got value of type",  # LiteRT
)


def input_mismatch(exc: BaseException) -> bool:
    """Whether a run failed because the model does not accept the input's shape or dtype."""
    text = str(exc)
    return any(marker in text for marker in _INPUT_MISMATCH)
