"""Dataset format loaders, one module per format; importing this package registers them all."""

from fdseg.data.formats import (
    ad_tau,  # noqa: F401
    busi,  # noqa: F401
    consep,  # noqa: F401
    folder,  # noqa: F401
    monuseg,  # noqa: F401
    tnbc,  # noqa: F401
    udiat,  # noqa: F401
)
