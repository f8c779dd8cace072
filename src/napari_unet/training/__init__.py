"""Training: weight map, augmentation, samples, loss, the loop, the learning-rate sweep."""
