"""Build the C extensions; everything else is declared in pyproject.toml.

``semtrust.model._sha256`` computes SHA-256 of concatenated short strings in
one call (see ``semtrust.model.digest``). It needs a C compiler, the Python
headers and libssl-dev. It is optional: without it the package installs and
hashes through hashlib, which makes replays about a third slower.

``semtrust.model._quick`` converts the numbers of plain COE and inode objects
and digests them for ``points`` and ``replay`` (see ``semtrust.model.quick``).
Same needs, also optional: without it those objects go through orjson and the
Python number rules, with the same answers, about twice as slow on
trajectories whose objects are all distinct.

``semtrust.orchestrator._decide`` answers known-point open decisions without
Python (see its docstring), and computes first-seen open coefficients with
OpenSSL's SHA-256. Also optional: without it every decision takes the Python
path, with the same answers.
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
            "semtrust.model._quick",
            sources=["src/semtrust/model/_quick.c"],
            libraries=["crypto"],
            optional=True,
        ),
        Extension(
            "semtrust.orchestrator._decide",
            sources=["src/semtrust/orchestrator/_decide.c",
                     "src/semtrust/orchestrator/_decide_tables.c",
                     "src/semtrust/orchestrator/_decide_firstseen.c"],
            depends=["src/semtrust/orchestrator/_decide.h"],
            libraries=["crypto"],
            optional=True,
        ),
    ]
)
