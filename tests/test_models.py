"""The source models have the source's shapes and parameter counts."""

from hpcdl.config import IndianPines3DCNN, MnistCNN
from hpcdl.models import build_model


def test_indian_pines_3dcnn_matches_the_source_table_on_220_bands():
    model = build_model(IndianPines3DCNN(name="indian_pines_3dcnn"), (9, 9, 220, 1), 16)
    assert model.count_params() == 578_544
    shapes = [
        (layer.__class__.__name__, tuple(layer.output_shape[1:]), layer.count_params())
        for layer in model.layers[1:]
    ]
    assert shapes == [
        ("Conv3D", (7, 7, 216, 48), 2_208),
        ("MaxPooling3D", (7, 7, 72, 48), 0),
        ("ZeroPadding3D", (7, 7, 76, 48), 0),
        ("Conv3D", (5, 5, 72, 32), 69_152),
        ("MaxPooling3D", (5, 5, 24, 32), 0),
        ("ZeroPadding3D", (5, 5, 28, 32), 0),
        ("Conv3D", (3, 3, 24, 32), 46_112),
        ("MaxPooling3D", (3, 3, 12, 32), 0),
        ("Flatten", (3456,), 0),
        ("Dense", (128,), 442_496),
        ("Dense", (128,), 16_512),
        ("Dense", (16,), 2_064),
    ]


def test_indian_pines_3dcnn_adapts_to_200_bands_and_other_windows():
    model = build_model(IndianPines3DCNN(name="indian_pines_3dcnn"), (9, 9, 200, 1), 16)
    assert model.layers[-4].output_shape[1:] == (2880,)  # 3 x 3 x 10 x 32
    small = build_model(
        IndianPines3DCNN(name="indian_pines_3dcnn", spatial_padding="same"), (5, 5, 200, 1), 16
    )
    assert small.output_shape == (None, 16)
    wide = build_model(IndianPines3DCNN(name="indian_pines_3dcnn"), (11, 11, 200, 1), 16)
    assert wide.layers[-4].output_shape[1:] == (5 * 5 * 10 * 32,)


def test_too_small_window_is_a_clear_error():
    import pytest

    from hpcdl.errors import HpcdlError

    with pytest.raises(HpcdlError, match="data.window"):
        build_model(IndianPines3DCNN(name="indian_pines_3dcnn"), (5, 5, 200, 1), 16)


def test_mnist_cnn_is_the_source_lenet():
    model = build_model(MnistCNN(name="mnist_cnn"), (28, 28, 1), 10)
    # conv 5*5*1*20+20, conv 5*5*20*50+50, dense 2450*500+500, dense 500*10+10
    assert model.count_params() == 520 + 25_050 + 1_225_500 + 5_010
    kinds = [layer.__class__.__name__ for layer in model.layers[1:]]
    assert kinds == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dense",
    ]


def test_indian_pines_3dcnn_sees_only_the_centre_crop_of_each_window():
    import numpy as np
    import pytest
    from pydantic import ValidationError

    from hpcdl.errors import HpcdlError
    from hpcdl.models import indian_pines_fits

    cfg = IndianPines3DCNN(name="indian_pines_3dcnn", crop=5, spatial_padding="same")
    model = build_model(cfg, (9, 9, 200, 1), 16)
    assert model.layers[1].output_shape[1:] == (5, 5, 200, 1)
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 200, 1)).astype("float32")
    changed = x.copy()
    changed[:, :2] = changed[:, -2:] = 7.0  # only pixels outside the centre 5 x 5
    assert np.array_equal(model(x).numpy(), model(changed).numpy())
    with pytest.raises(HpcdlError, match="crop 11 is larger than the 9x9 window"):
        indian_pines_fits(IndianPines3DCNN(name="indian_pines_3dcnn", crop=11), (9, 9, 200, 1))
    with pytest.raises(HpcdlError, match="feature map would be empty"):  # 3x3 valid convs
        indian_pines_fits(IndianPines3DCNN(name="indian_pines_3dcnn", crop=3), (9, 9, 200, 1))
    with pytest.raises(ValidationError, match="crop must be odd"):
        IndianPines3DCNN(name="indian_pines_3dcnn", crop=4)


def test_indian_pines_spectral_sees_the_mean_spectra_of_centre_squares():
    import numpy as np
    import pytest
    from pydantic import ValidationError

    from hpcdl.config import IndianPinesSpectral
    from hpcdl.errors import HpcdlError
    from hpcdl.models import check_fits

    cfg = IndianPinesSpectral(name="indian_pines_spectral", scales=[1, 3, 9])
    model = build_model(cfg, (9, 9, 200, 1), 16)
    assert model.output_shape == (None, 16)
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 200, 1)).astype("float32")
    features = model.get_layer(index=[type(k).__name__ for k in model.layers].index("Concatenate"))
    got = type(model)(model.inputs, features.output)(x).numpy()
    want = np.concatenate(
        [x[:, 4, 4, :, 0], x[:, 3:6, 3:6, :, 0].mean((1, 2)), x.mean((1, 2))[..., 0]], 1
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # inference ignores the training noise and dropout: the same input, the same prediction
    assert np.array_equal(model(x, training=False).numpy(), model(x, training=False).numpy())
    with pytest.raises(HpcdlError, match=r"scales \[11\] are larger than the 9x9 window"):
        check_fits(
            IndianPinesSpectral(name="indian_pines_spectral", scales=[1, 11]), (9, 9, 200, 1)
        )
    with pytest.raises(ValidationError, match="scales must be odd"):
        IndianPinesSpectral(name="indian_pines_spectral", scales=[1, 4])
