"""Fleet verification: a verifier service over SQL, agents that push attestations.

``db`` holds the schema and its migrations; ``auth`` signs and checks agent
requests; ``appraise`` is the work queue and the domain status machine (it calls
:mod:`semtrust.attest.verify`, the one implementation of the checks);
``alerts`` publishes status changes; ``metrics`` the Prometheus view; ``app``
the HTTP API and ``web`` its server-rendered pages; ``agent`` runs on each host.
"""
