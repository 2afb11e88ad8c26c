"""Dataset format loaders, one module per format; importing this package registers them all."""
from fdseg.data.formats import (
    folder,  # noqa: F401
    monuseg,  # noqa: F401
    tnbc,  # noqa: F401
)
