"""Prediction: the tile plan, overlap-tiling in memory and block by block, the mask and cells."""
