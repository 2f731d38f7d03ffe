"""Image-quality scores of a face crop."""

from __future__ import annotations

import cv2
import numpy as np


def sharpness(rgb: np.ndarray, size: int = 256) -> float:
    """Variance of the Laplacian of the grey face crop, at a fixed size so that scores compare."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if grey.shape[0] != size or grey.shape[1] != size:
        grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
