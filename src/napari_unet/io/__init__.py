"""Files and labels: TIFF and zarr stacks, exports, annotation conventions, the bundled sample."""
