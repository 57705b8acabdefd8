"""The one atomic file writer (images, model files, exported ONNX graphs).

The content goes to a hidden temporary file next to the target, which is then renamed over it: the
rename is atomic on POSIX and Windows (same folder, same file system), so readers see the old file
or the complete new one, never a truncated file, and a failure or an interrupt leaves nothing
behind. The temporary name keeps the target's extension (some writers choose the format by it) and
starts with a dot (so :func:`llflow.io.list_images` never picks it up). The file gets the usual mode
(0666 minus the umask), also when a writer such as safetensors creates it 0600.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Union

__all__ = ["atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Union[str, "os.PathLike[str]"], content: Union[bytes, Callable[[Path], Any]]) -> Path:
    """Write ``content`` (bytes, or a function that writes the file at the path it is given) to
    ``path`` atomically; returns ``path``. Errors (``OSError`` included) propagate after cleaning up."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        if isinstance(content, (bytes, bytearray, memoryview)):
            with open(tmp, "xb") as handle:  # 'x': never clobber anything; mode follows the umask
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            content(tmp)
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:  # incl. KeyboardInterrupt: clean up, then re-raise
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
