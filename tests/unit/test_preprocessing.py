import cv2
import numpy as np
import pytest

from edgecascade.cloud.common.manifest import Preprocessing
from edgecascade.cloud.common.preprocessing import InvalidImage, decode_image, prepare, raw_image


def rgb_image(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)


def test_png_and_jpeg_decode_to_rgb():
    image = rgb_image(40, 60)
    png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    np.testing.assert_array_equal(decode_image(png), image)
    jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100]
    )[1]
    decoded = decode_image(jpeg.tobytes())
    assert decoded.shape == (40, 60, 3)
    assert np.abs(decoded.astype(int) - image).mean() < 3


def test_gray_png_decodes_to_2d():
    gray = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(decode_image(cv2.imencode(".png", gray)[1].tobytes()), gray)


@pytest.mark.parametrize("data, match", [(b"", "empty"), (b"GIF89a-not-really", "cannot decode")])
def test_garbage_is_rejected_with_a_reason(data, match):
    with pytest.raises(InvalidImage, match=match):
        decode_image(data)


def test_raw_image_checks_shape_and_size():
    np.testing.assert_array_equal(raw_image([2, 3], bytes(range(6))), np.arange(6).reshape(2, 3))
    with pytest.raises(InvalidImage, match="needs 12 uint8 bytes, got 6"):
        raw_image([2, 2, 3], bytes(6))
    with pytest.raises(InvalidImage, match="channels"):
        raw_image([2, 2, 4], bytes(16))
    with pytest.raises(InvalidImage, match="must be"):
        raw_image([4], bytes(4))


def test_resize_short_side_then_centre_crop():
    spec = Preprocessing(color="rgb", size=224, resize_short=256)
    out = prepare(rgb_image(300, 600), spec)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # Short side 300 -> 256, long side 600 -> 512; the crop is centred.
    resized = cv2.resize(rgb_image(300, 600), (512, 256), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, resized[16:240, 144:368])


def test_colour_conversion_and_passthrough():
    gray_spec = Preprocessing(color="gray", size=28, resize_short=28)
    gray = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(prepare(gray, gray_spec), gray[:, :, None])
    assert prepare(rgb_image(56, 56), gray_spec).shape == (28, 28, 1)
    rgb_spec = Preprocessing(color="rgb", size=28, resize_short=28)
    out = prepare(gray, rgb_spec)
    assert out.shape == (28, 28, 3) and (out[..., 0] == out[..., 2]).all()
