"""The learned expression net with the crop it expects: 7-class probabilities of faces with 68 landmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class LearnedExpression:
    """The expression net with the crop it expects; probabilities of aligned faces with 68 landmarks."""

    def __init__(self, path: str | None = None) -> None:
        from stages.face.expression_net import EXPRESSION_CLASSES, ExpressionNet, expression_crop

        self.net: Any = ExpressionNet.load(path)
        self.classes: tuple[str, ...] = tuple(EXPRESSION_CLASSES)
        self._crop = expression_crop
        self.model_id: str = self.net.model_id
        self.model_sha256: str = self.net.sha256

    def probabilities(self, images: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        """(N, 7) probabilities; each image RGB uint8 with its (68, 2) landmarks in that image."""
        if not images:
            return np.zeros((0, len(self.classes)), np.float32)
        crops = np.stack([self._crop(im, np.asarray(lm, np.float32).reshape(68, 2))
                          for im, lm in zip(images, landmarks, strict=True)])
        return np.asarray(self.net.probabilities(crops), np.float32)

    def label(self, probs: Sequence[float] | np.ndarray) -> str:
        return self.classes[int(np.argmax(probs))]
