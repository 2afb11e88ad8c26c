"""Dataset format loaders, one module per format; importing this package registers them all."""
from fdseg.data.formats import folder  # noqa: F401
