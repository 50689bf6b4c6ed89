"""Turn whatever the caller passed into a validated RGB PIL image, or raise a typed error.

Accepted: a path, raw bytes, a PIL image, a numpy array (HxWxC uint8 or float in [0, 1]) or a
torch tensor (CxHxW or 1xCxHxW, float in [0, 1]: the attack library's convention). The pixel
limit is checked from the header before decoding, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from retlink.core.errors import ImageTooLargeError, InvalidImageError

ImageInput = Any  # str | Path | bytes | PIL.Image.Image | np.ndarray | torch.Tensor


def _check_size(width: int, height: int, max_pixels: int, min_side: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )
    if min(width, height) < min_side:
        raise InvalidImageError(f"{what} is {width}x{height}, smaller than {min_side} px on a side")


def _decode(data: bytes, what: str, max_pixels: int, min_side: int) -> Image.Image:
    """Decode untrusted bytes. PIL's format plugins are parsers of hostile input: besides its
    documented errors, a crafted file can make one raise almost anything (struct.error,
    IndexError, ...), so every exception of `open`/`load`/`convert` is a corrupt image, except
    PIL's own decompression-bomb refusal, which is a too-large one (`Image.open` raises it from
    the header alone, before our pixel check can run)."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{what} declares too many pixels: {e}") from None
    except UnidentifiedImageError:
        raise InvalidImageError(f"{what} is not an image (unrecognised format)") from None
    except Exception as e:
        raise InvalidImageError(f"{what} is corrupt or truncated: {_reason(e)}") from None
    _check_size(img.width, img.height, max_pixels, min_side, what)
    try:
        img.load()  # forces a full decode: truncated files fail here, not later in a model
        return to_rgb(img)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{what} declares too many pixels: {e}") from None
    except MemoryError:
        raise ImageTooLargeError(f"{what} needs more memory to decode than is available") from None
    except Exception as e:
        raise InvalidImageError(f"{what} is corrupt or truncated: {_reason(e)}") from None


#: integer modes PIL keeps at more than 8 bits (16-bit PNG/TIFF grayscale open as I;16 or I)
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB image of `img`, high bit depths scaled to 8 bits (the one conversion every image
    goes through).

    PIL's own `convert("RGB")` clips a 16-bit grayscale image's values at 255 instead of
    scaling them (a full-range gradient comes out 99.6% white); here 16-bit integers are scaled
    by 255/65535 and 32-bit floats (mode F) are taken as [0, 1] when they lie in it and as 16-bit
    values otherwise."""
    if img.mode in _WIDE_INT_MODES:
        arr = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.rint(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0 else 255.0 / 65535.0
        img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def _reason(e: Exception) -> str:
    return str(e) or type(e).__name__


def _from_array(arr: np.ndarray, what: str) -> Image.Image:
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InvalidImageError(f"{what} has shape {arr.shape}; expected HxW, HxWxC or CxHxW (C = 1, 3 or 4)")
    if arr.size == 0:
        raise InvalidImageError(f"{what} is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise InvalidImageError(f"{what} has dtype {arr.dtype}; expected real numbers")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidImageError(f"{what} contains NaN or infinite values")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype == np.uint16:  # 16-bit samples: scaled like a 16-bit file (`to_rgb`), not clipped
        arr = np.rint(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def load_image(
    image: ImageInput, *, max_pixels: int = 40_000_000, max_bytes: int = 20 * 1024 * 1024, min_side: int = 8
) -> Image.Image:
    """Return an RGB PIL image, raising InvalidImageError / ImageTooLargeError with a clear message."""
    if image is None:
        raise InvalidImageError("no image given")
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, max_pixels, min_side, "image")
        return to_rgb(image)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.exists():
            raise InvalidImageError(f"image file not found: {path}")
        if not path.is_file():
            raise InvalidImageError(f"image path is not a file: {path}")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageTooLargeError(f"image file {path} is {size:,} bytes, over the limit of {max_bytes:,}")
        return _decode(path.read_bytes(), f"image file {path}", max_pixels, min_side)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"image is {len(data):,} bytes, over the limit of {max_bytes:,}")
        if not data:
            raise InvalidImageError("image bytes are empty")
        return _decode(data, "image", max_pixels, min_side)
    if isinstance(image, np.ndarray):
        img = _from_array(image, "image array")
        _check_size(img.width, img.height, max_pixels, min_side, "image array")
        return img
    if type(image).__module__.startswith("torch"):
        img = _from_array(image.detach().cpu().float().numpy(), "image tensor")
        _check_size(img.width, img.height, max_pixels, min_side, "image tensor")
        return img
    raise InvalidImageError(
        f"unsupported image type {type(image).__name__}; pass a path, bytes, a PIL image, an array or a tensor"
    )


def to_tensor(img: Image.Image):
    """PIL RGB -> float tensor CxHxW in [0, 1] (the attack library's convention)."""
    import torch

    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_pixels(img: Image.Image) -> np.ndarray:
    """PIL -> uint8 HxWx3 array: how the graph's state carries an image, because LangGraph's
    checkpoint serializer stores numpy arrays natively and cannot store a PIL image."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def from_pixels(pixels: np.ndarray) -> Image.Image:
    """The RGB PIL image of a state's pixels (`to_pixels`'s inverse, exact)."""
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB")


def storable_input(image: ImageInput) -> ImageInput:
    """An input image in a form a checkpointer can store, validated later exactly as before:
    a PIL image becomes its RGB pixels and a tensor its float array (what `load_image` would
    have made of them); paths, bytes and arrays pass unchanged."""
    if isinstance(image, Image.Image):
        return to_pixels(image)
    if type(image).__module__.startswith("torch"):
        return image.detach().cpu().float().numpy()
    return image
