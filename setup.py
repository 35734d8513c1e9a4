"""Build of the one compiled part: the bit-serial B-DCNN kernel (models/bitserial_native.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler (or Python headers)
the install goes on without it, and ``models.bitserial`` falls back to numba, saying so at import.
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-std=c99"]
setup(
    ext_modules=[
        Extension(
            "models._bitserial_native",
            sources=["models/bitserial_native.c"],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
