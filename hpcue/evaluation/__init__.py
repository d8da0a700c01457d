"""How well a protection works: victims trained on the data, and the metrics reported.

Defenses (grayscale, JPEG, ...) applied to the unlearnable set before a victim trains go in
``defenses.py`` beside these; accuracy statistics over seeds and image quality (PSNR, SSIM) in
``metrics.py``.
"""
