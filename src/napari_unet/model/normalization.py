"""Intensity normalisation: measured once on the training image, stored in the model file."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation, measured once on the training image and stored with the model.

    ``unit`` maps raw intensities to [0, 1] between robust bounds (what the
    augmentation's grey-value changes act on); ``network`` standardises that
    for the network.

    Attributes
    ----------
    low, high : float
        Raw intensities mapped to 0 and 1 (the 0.1 and 99.9 percentiles).
    mean, std : float
        Mean and standard deviation of the [0, 1] image.
    """

    low: float
    high: float
    mean: float
    std: float

    @classmethod
    def of(cls, image: np.ndarray, *, max_samples: int = 1_000_000) -> "Normalization":
        """Measure an image (any shape), on a regular subsample when it is large."""
        flat = np.asarray(image).ravel()
        flat = flat[:: max(1, flat.size // max_samples)].astype(np.float64)
        low, high = np.percentile(flat, [0.1, 99.9])
        if high <= low:
            low, high = float(flat.min()), float(flat.max())
            high = high if high > low else low + 1.0
        unit = np.clip((flat - low) / (high - low), 0.0, 1.0)
        return cls(low=float(low), high=float(high), mean=float(unit.mean()),
                   std=float(max(unit.std(), 1e-6)))

    def unit(self, image: np.ndarray) -> np.ndarray:
        """Return the image mapped to [0, 1] as float32."""
        scaled = (np.asarray(image, dtype=np.float32) - self.low) / (self.high - self.low)
        return np.clip(scaled, 0.0, 1.0, out=scaled)

    def network(self, unit_image: np.ndarray) -> np.ndarray:
        """Return a [0, 1] image standardised for the network (float32)."""
        return (unit_image - np.float32(self.mean)) / np.float32(self.std)
