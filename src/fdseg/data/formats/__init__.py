"""Dataset format loaders, one module per format; importing this package registers them all."""
