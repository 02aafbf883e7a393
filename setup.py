"""Build the one C extension; everything else is declared in pyproject.toml.

``semtrust.model._sha256`` computes SHA-256 of concatenated short strings in
one call (see ``semtrust.model.digest``). It needs a C compiler, the Python
headers and libssl-dev. It is optional: without it the package installs and
hashes through hashlib, which makes replays about a third slower.

``semtrust.orchestrator._decide`` answers known-point open decisions without
Python (see its docstring). Also optional: without it every decision takes the
Python path, with the same answers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "semtrust.model._sha256",
            sources=["src/semtrust/model/_sha256.c"],
            libraries=["crypto"],
            optional=True,
        ),
        Extension(
            "semtrust.orchestrator._decide",
            sources=["src/semtrust/orchestrator/_decide.c"],
            optional=True,
        ),
    ]
)
