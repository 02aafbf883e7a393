"""Trust orchestration: modeling domains, task identity and trust, workload launch.

Public API (for other launchers, e.g. OCI containers):

* :class:`semtrust.orchestrator.domain.Domain` -- ``Domain(name, tma)``,
  ``serve(listener)``, ``tasks`` (trust table), ``write_output(path, trajectory)``
* :func:`semtrust.orchestrator.launch.launch` -- our own process launcher
* :class:`semtrust.orchestrator.mgmt.MgmtServer`, ``register_request``
* :func:`semtrust.orchestrator.run.run_domain` -- the whole ``semtrust run`` flow
"""
