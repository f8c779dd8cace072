"""The network: the U-Net, its sizes, its normalisation and its model file."""
