"""Rate–distortion points of the recurrent codec and of classical codecs, measured from real bytes.

Every rate comes from an encoded byte string (:mod:`coding.rnn_bitstream`, :mod:`coding.image_codecs`),
every distortion from decoding that string. Rows are plain dicts, one per setting, averaged over the
images (the mean of per-image values, as in CompressAI's and Kodak-style evaluations):

``codec``          ``"rnn"`` or the classical codec's name
``setting``        ``"it{k}"`` (k iterations), ``"q{quality}"``, or ``"lossless"`` (PNG)
``bpp``            bits per pixel of the whole stream/file, header or container included
``bytes``          mean bytes per image of that stream/file (for the recurrent codec the stream
                   :func:`coding.rnn_bitstream.compress` writes by default: the smaller payload)
``psnr``           dB, ``data_range=1`` (``inf`` for an exact reconstruction)
``ms_ssim``        MS-SSIM, ``data_range=1``; see :func:`ms_ssim_scales` for small images
``ms_ssim_scales`` fewest scales any image was evaluated with (5 = standard MS-SSIM; 0 = too small, NaN)

Recurrent-codec rows add ``iterations``, ``bpp_payload`` (header excluded), ``bytes_packed`` /
``bpp_packed`` (the stream with bit-packed codes), ``bytes_entropy`` / ``bpp_entropy`` (entropy coded by
:mod:`coding.code_entropy`) and ``header_bytes``; every size from
:func:`coding.rnn_bitstream.stream_bytes_per_image`. Classical rows add ``quality`` (``None`` for PNG).

Distortion is measured against the images as given (float in [0, 1]); classical codecs encode them
rounded to 8 bits, so pass 8-bit images (e.g. decoded from files) for an exact like-for-like comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from coding import image_codecs
from coding.image_quality import ms_ssim, ms_ssim_scales, psnr
from coding.rnn_bitstream import HEADER_SIZE, compress_codes, decompress_all_iterations, stream_bytes_per_image
from models.rnn_codec import RNNCodec


def _check_images(images: Sequence[Tensor]) -> None:
    if len(images) == 0:
        raise ValueError("images must be a non-empty list of (3, H, W) tensors")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(
                f"image {i} must be a float tensor (3, H, W) in [0, 1], got {getattr(image, 'shape', image)}"
            )
        if image.min() < 0 or image.max() > 1:
            raise ValueError(f"image {i} must be in [0, 1]")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def rnn_codec_points(codec: RNNCodec, images: Sequence[Tensor], iterations: int) -> list[dict]:
    """One row per iteration k = 1..T (keys in the module docstring).

    Each image is encoded once for T iterations; the sizes of its streams of the first k iterations come
    from :func:`coding.rnn_bitstream.stream_bytes_per_image` (exactly what ``compress(codec, image, k)``
    writes), and the distortion after k iterations from decoding the T-iteration stream.
    """
    _check_images(images)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    weight = next(codec.parameters())
    per_image: list[list[dict]] = []
    for image in images:
        x = image[None].to(device=weight.device, dtype=weight.dtype)
        size = (image.shape[-2], image.shape[-1])
        pixels = size[0] * size[1]
        codes = codec.encode(x, iterations)
        x_hats = decompress_all_iterations(codec, compress_codes(codec, codes, size)).cpu()
        sizes = {coding: stream_bytes_per_image(codes, coding)[:, 0].tolist() for coding in ("packed", "entropy")}
        rows = []
        for k in range(1, iterations + 1):
            packed, entropy = sizes["packed"][k - 1], sizes["entropy"][k - 1]
            smallest = min(packed, entropy)
            value, scales = float(ms_ssim(x_hats[k - 1], image.cpu()[None])[0]), ms_ssim_scales(*image.shape[-2:])
            rows.append(
                {
                    "bpp": smallest * 8 / pixels,
                    "bpp_payload": (smallest - HEADER_SIZE) * 8 / pixels,
                    "bytes": smallest,
                    "bpp_packed": packed * 8 / pixels,
                    "bytes_packed": packed,
                    "bpp_entropy": entropy * 8 / pixels,
                    "bytes_entropy": entropy,
                    "header_bytes": HEADER_SIZE,
                    "psnr": float(psnr(x_hats[k - 1], image.cpu()[None])[0]),
                    "ms_ssim": value,
                    "ms_ssim_scales": scales,
                }
            )
        per_image.append(rows)
    points = []
    for k in range(1, iterations + 1):
        rows = [image_rows[k - 1] for image_rows in per_image]
        point: dict = {"codec": "rnn", "setting": f"it{k}", "iterations": k}
        for key in rows[0]:
            if key == "ms_ssim_scales":
                point[key] = min(row[key] for row in rows)
            elif key != "header_bytes":
                point[key] = _mean([row[key] for row in rows])
        point["header_bytes"] = rows[0]["header_bytes"]
        points.append(point)
    return points


def _image_codec_point(images: Sequence[Tensor], codec: str, quality: int | None) -> dict:
    bpps, sizes, psnrs, ssims, scales = [], [], [], [], []
    for image in images:
        data = image_codecs.encode_image(image, codec, quality)
        decoded = image_codecs.to_float_chw(image_codecs.decode_image(data, codec))
        target = image.detach().cpu().float()
        value, n = float(ms_ssim(decoded[None], target[None])[0]), ms_ssim_scales(*target.shape[-2:])
        bpps.append(len(data) * 8 / (image.shape[-2] * image.shape[-1]))
        sizes.append(len(data))
        psnrs.append(float(psnr(decoded[None], target[None])[0]))
        ssims.append(value)
        scales.append(n)
    return {
        "codec": codec,
        "setting": "lossless" if quality is None else f"q{quality}",
        "quality": quality,
        "bpp": _mean(bpps),
        "bytes": _mean(sizes),
        "psnr": _mean(psnrs),
        "ms_ssim": _mean(ssims),
        "ms_ssim_scales": min(scales),
    }


def image_codec_points(images: Sequence[Tensor], codec: str, qualities: Sequence[int | None]) -> list[dict]:
    """One row per quality for a classical codec (keys in the module docstring); PNG ignores quality
    and gives one ``"lossless"`` row however many qualities are asked for.

    Raises:
        ValueError: unknown or unavailable codec, or a quality out of its range (checked before any work).
    """
    _check_images(images)
    spec = image_codecs.get_codec(codec)
    if spec.qualities is None:
        return [_image_codec_point(images, codec, None)]
    checked = [image_codecs.check_quality(codec, q) for q in qualities]
    return [_image_codec_point(images, codec, q) for q in checked]


def nearest_quality_at_bpp(images: Sequence[Tensor], codec: str, target_bpp: float) -> dict:
    """The row of the quality whose mean bpp is nearest to ``target_bpp`` (plus ``target_bpp``).

    Binary search over the codec's quality range, assuming bpp grows with quality (true of these codecs
    up to small wiggles); the answer is the nearest of all qualities actually measured on the way, so a
    wiggle costs accuracy, never correctness of the reported numbers. About log2(101) ≈ 7 encodes of
    every image.
    """
    _check_images(images)
    if not target_bpp > 0:
        raise ValueError(f"target_bpp must be positive, got {target_bpp}")
    spec = image_codecs.get_codec(codec)
    measured: dict[int | None, dict] = {}

    def at(quality: int | None) -> dict:
        if quality not in measured:
            measured[quality] = _image_codec_point(images, codec, quality)
        return measured[quality]

    if spec.qualities is None:
        at(None)
    else:
        low, high = spec.quality_min, spec.quality_max
        if at(low)["bpp"] < target_bpp < at(high)["bpp"]:
            while high - low > 1:
                middle = (low + high) // 2
                if at(middle)["bpp"] < target_bpp:
                    low = middle
                else:
                    high = middle
    best = min(measured.values(), key=lambda row: abs(row["bpp"] - target_bpp))
    return {**best, "target_bpp": float(target_bpp)}
