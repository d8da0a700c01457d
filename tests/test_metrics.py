"""Image quality of the unlearnable set: PSNR and SSIM against the clean images."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hpcue.data.tensors import to_float
from hpcue.evaluation.metrics import psnr_ssim, quality_sums
from hpcue.stages.generate import shard_quality


def _pair(n=10, size=24, eps=16):
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    noise = rng.integers(-eps, eps + 1, clean.shape)
    return clean, np.clip(clean.astype(int) + noise, 0, 255).astype(np.uint8)


def test_psnr_is_the_whole_sets_and_agrees_with_scikit_image():
    clean, perturbed = _pair()
    psnr, _ = psnr_ssim(shard_quality(clean, perturbed))
    assert psnr == pytest.approx(peak_signal_noise_ratio(clean, perturbed, data_range=255),
                                 abs=1e-6)


def test_ssim_is_one_for_identical_images_and_close_to_scikit_image():
    clean, perturbed = _pair()
    psnr, same = psnr_ssim(shard_quality(clean, clean))
    assert psnr is None and same == pytest.approx(1.0)
    _, ssim = psnr_ssim(shard_quality(clean, perturbed))
    reference = np.mean([structural_similarity(c, p, channel_axis=-1, data_range=255,
                                               gaussian_weights=True, sigma=1.5,
                                               use_sample_covariance=False)
                         for c, p in zip(clean, perturbed, strict=True)])
    assert 0 < ssim < 1 and ssim == pytest.approx(reference, abs=0.02)


def test_chunked_sums_equal_one_pass():
    clean, perturbed = _pair(n=9)
    one = quality_sums(to_float(torch.from_numpy(clean)), to_float(torch.from_numpy(perturbed)))
    torch.testing.assert_close(shard_quality(clean, perturbed, chunk=4), one)
